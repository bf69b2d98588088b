"""The pixel baselines through the runner on UCI digits: rows with test and shifted accuracies,
pixels read once per (split, shift), kNN on raw 8×8 digits above 90 %, and selection that never
reads the test split."""

import json
import os

from ml_collections import config_dict
import numpy as np
import pytest
import support

from jtransfer.benchmark import evaluators, features, harness, kinds

SHIFT = ("gaussian_noise", 3)
NAMES = ("pixels_knn", "pixels_ridge", "pixels_logreg")


def _config():
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": False})
  c.base = support.tiny_experiment("uci_digits", 2)  # model.init '': no weights are needed
  c.datasets = ("uci_digits",)
  c.shots = (2, "all")
  c.seeds = (0,)
  c.shot_overrides = {}
  c.protocol = config_dict.ConfigDict({"val_per_class": 10})
  c.shifts = (SHIFT,)
  c.variants = config_dict.ConfigDict({
      "pixels_knn": harness.variant("pixels_knn", search={"k": (1, 10)}),
      "pixels_ridge": harness.variant("pixels_ridge", search={"l2_reg": (0.1, 10.0)}),
      "pixels_logreg": harness.variant("pixels_logreg", search={"C": (0.1, 10.0)}),
  })
  c.order = NAMES
  return c


def _run(workdir):
  with open(os.devnull, "w") as sink:
    return harness.run(_config(), workdir, stream=sink)


def _trials(workdir):
  with open(os.path.join(workdir, "trials.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  reads = []
  extract = features.extract

  def counting(model_cfg, data_cfg, split):
    reads.append((model_cfg, split, json.dumps(list(data_cfg.pp_eval or ()))))
    return extract(model_cfg, data_cfg, split)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(features, "extract", counting)
    workdir = str(tmp_path_factory.mktemp("bench"))
    rows = _run(workdir)
  return workdir, rows, reads


def test_rows_have_test_and_shifted_accuracies_and_no_model_cost(finished):
  workdir, rows, _ = finished
  assert sorted(r["cell"] for r in rows) == sorted(c.id for c in harness.cells(_config()))
  d = 8 * 8 * 3  # the cell's eval-preprocessed 8 px RGB images, flattened
  for r in rows:
    assert 0.0 <= r["test_top1"] <= 1.0 and set(r["ood"]) == {harness.shift_name(*SHIFT)}
    assert r["budget"] == 2 and r["train_gflops"] == 0.0 and r["peak_bytes"] is None
    assert r["trainable_params"] == {"pixels_knn": 0, "pixels_ridge": (d + 1) * 10,
                                     "pixels_logreg": d * 10 + 10}[r["variant"]]
  for t in _trials(workdir):  # logistic regression says whether it converged
    assert ("converged" in t["val"]) == t["cell"].startswith("uci_digits/pixels_logreg/")
  assert all(r["metrics"]["converged"] for r in rows if r["variant"] == "pixels_logreg")
  assert os.path.getsize(os.path.join(workdir, "results.md")) > 0


def test_pixels_are_read_once_per_split_and_shift_and_cached(finished):
  workdir, _, reads = finished
  # pool, validation of the k-shot and of the 'all' cells, test, shifted test; shared by 6 cells.
  assert len(reads) == 5 and all(model is None for model, _, _ in reads)
  assert len(set(reads)) == 5
  cached = sorted(os.listdir(os.path.join(workdir, "features")))
  assert len(cached) == 5 and all(name.startswith("uci_digits-") for name in cached)
  with np.load(os.path.join(workdir, "features", cached[0])) as f:
    assert f["x"].ndim == 2 and f["x"].shape[1] == 8 * 8 * 3 and f["x"].dtype == np.float32


def test_knn_on_raw_digits_is_high(finished):
  """8×8 digits are nearly separable in pixel space: kNN on the whole pool gets ~95 %."""
  _, rows, _ = finished
  by = {(r["variant"], r["shots"]): r for r in rows}
  assert by["pixels_knn", "all"]["test_top1"] > 0.9
  assert by["pixels_knn", "all"]["ood"]["gaussian_noise-3"] > 0.8
  assert by["pixels_knn", "all"]["test_top1"] > by["pixels_knn", 2]["test_top1"] > 0.5
  for name in NAMES:  # every evaluator learns from 2 images per class (chance: 10 %)
    assert by[name, 2]["test_top1"] > 0.5, name


def test_pixel_kinds_are_registered_per_evaluator():
  for name in evaluators.EVALUATORS:
    kind = kinds.get(f"pixels_{name}")
    assert kind.name == f"pixels_{name}" and kind.evaluator == name and not kind.uses_features
  assert kinds.get("pixels_logreg").arg_names == {"C", "max_iter", "tol"}


def test_a_pixel_variant_cannot_serve_the_zero_shot_section():
  c = _config()
  c.zeroshot = {"attributes": "", "splits": 3, "seeds": (0,)}
  with pytest.raises(ValueError, match="needs a feature-classifier variant"):
    harness.validate(c)


def test_selection_never_reads_the_test_split(finished, tmp_path, monkeypatch):
  """Test labels permuted: every trial and every choice is the same; only test scores move (as
  tests/test_benchmark_selection.py checks it for the feature and trained kinds)."""
  workdir, rows, _ = finished
  run = lambda: (_run(str(tmp_path)), _trials(str(tmp_path)))
  support.assert_selection_ignores_test_labels(run, rows, _trials(workdir), monkeypatch)
