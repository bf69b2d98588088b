"""Held-out selection: validation disjoint from the few-shot draw, the choice is the validation
argmax, the test split is never read for it, restarts skip finished trials, the per-cell columns."""

import csv
import json
import os

import jax
from ml_collections import config_dict
import numpy as np
import pytest
import support

from jtransfer import data, optim
from jtransfer.benchmark import harness
from jtransfer.data import sources

SHIFT = ("gaussian_noise", 3)


def _experiment(init: str):
  return support.tiny_experiment("uci_digits", 2, init=init)


def _config(init: str):
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": False, "config": _experiment(init)})
  c.base = _experiment(init)
  c.datasets = ("uci_digits",)
  c.shots = (2,)
  c.seeds = (0,)
  c.shot_overrides = {}
  c.protocol = config_dict.ConfigDict({
      "val_per_class": 10, "comparisons": (("FT vs ridge", "full_finetune", "ridge", "test"),)})
  c.shifts = (SHIFT,)
  c.variants = config_dict.ConfigDict({
      "ridge": harness.variant("ridge", search={"l2_reg": (0.01, 1.0, 100.0)}),
      "full_finetune": harness.variant("train", freezing=optim.get_freezing_config("full_ft"),
                                       search={"optim.lr": (1e-3, 3e-2)}),
      "wise": harness.variant("wise", teacher="full_finetune", search={"alpha": (0.5, 1.0)}),
  })
  c.order = ("ridge", "full_finetune", "wise")
  return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """Random-init 'pretrained' weights with their model.json: no pretraining run needed."""
  return support.random_pretrained(str(tmp_path_factory.mktemp("weights")))


def _run(config, workdir, log=None):
  with open(log or os.devnull, "w") as sink:
    return harness.run(config, workdir, stream=sink)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, pretrained, cache):
  workdir = str(tmp_path_factory.mktemp("bench"))
  rows = _run(_config(pretrained), workdir)
  return workdir, rows


def _trials(workdir):
  with open(os.path.join(workdir, "trials.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_validation_is_disjoint_from_the_few_shot_train_set(pretrained):
  config = _config(pretrained)
  n = sources.open_split(config.base.data, "train").num_examples
  few = harness.splits_for(config, "uci_digits", 2)
  full = harness.splits_for(config, "uci_digits", "all")
  n_pool = int(round(n * 0.8))
  assert few.pool == full.pool == f"train[:{n_pool}]"
  assert few.val == f"train[{n_pool}:{n_pool + 100}]"   # 10 per class on average, k-shot cells
  assert full.val == f"train[{n_pool}:{n}]" and few.test == "test"
  # The training pipeline's few-shot draw comes from the pool's positions only ...
  cfg = harness.cell_config(config, harness.Cell("uci_digits", "full_finetune", 2, 0),
                            pretrained=pretrained, splits=few)
  assert cfg.data.train_split == few.pool and cfg.data.eval_split == few.val
  pool = sources.open_split(cfg.data, train=True)
  assert pool.num_examples == 20
  # ... and the examples it trains on are not among the validation ones (as pixels).
  dcfg = cfg.data.copy_and_resolve_references()
  batches = list(data.eval_iterator(_with(dcfg, eval_split=few.pool), few.pool, process_index=0,
                                    process_count=1))
  train_images = np.concatenate([b["image"][b["mask"]] for b in batches])
  idx = data.sample_per_class(np.concatenate([b["label"][b["mask"]] for b in batches]), 2, 0)
  assert idx.max() < n_pool
  val_images = np.concatenate([b["image"][b["mask"]] for b in data.eval_iterator(
      dcfg, few.val, process_index=0, process_count=1)])
  assert len(val_images) == 100
  val_keys = {v.tobytes() for v in val_images}
  assert not any(train_images[i].tobytes() in val_keys for i in idx)


def _with(cfg, **fields):
  cfg = cfg.copy_and_resolve_references()
  for k, v in fields.items():
    cfg[k] = v
  return cfg


def test_chosen_point_is_the_validation_argmax(finished):
  workdir, rows = finished
  trials = _trials(workdir)
  assert len(rows) == 3 and len(trials) == 3 + 2 + 2
  for row in rows:
    mine = [t for t in trials if t["cell"] == row["cell"]]
    assert row["budget"] == len(mine) and row["selection"] == "val"
    best = max(t["val_top1"] for t in mine)
    first_best = next(t for t in mine if t["val_top1"] == best)
    assert row["chosen"] == first_best["point"] and row["val_top1"] == best
  ft = next(r for r in rows if r["variant"] == "full_finetune")
  # WiSE-FT at α = 1 is the fine-tune itself: the same validation score.
  wise_1 = next(t for t in trials if t["trial"].endswith("/wise/shots-2/seed-0/alpha=1.0"))
  assert wise_1["val_top1"] == ft["val_top1"]
  # Trained runs evaluate on validation: their result.json is the validation score.
  for t in (t for t in trials if t["cell"] == ft["cell"]):
    with open(os.path.join(t["run_dir"], "result.json")) as f:
      assert json.load(f)["eval"]["top1"] == t["val_top1"]
    with open(os.path.join(t["run_dir"], "config.json")) as f:
      assert json.load(f)["data"]["eval_split"].startswith("train[")


def test_selection_never_reads_the_test_split(finished, pretrained, tmp_path, monkeypatch):
  """Test labels permuted: every trial and every choice is the same; only test scores move."""
  workdir, rows = finished
  run = lambda: (_run(_config(pretrained), str(tmp_path)), _trials(str(tmp_path)))
  support.assert_selection_ignores_test_labels(run, rows, _trials(workdir), monkeypatch)


def test_results_csv_has_every_column_per_cell(finished):
  workdir, _ = finished
  with open(os.path.join(workdir, "results.csv")) as f:
    table = list(csv.DictReader(f))
  assert len(table) == 3
  for column in ("variant", "dataset", "shots", "seed", "hyperparams", "val_top1", "test_top1",
                 f"ood_{harness.shift_name(*SHIFT)}", "ood_mean", "trainable_params",
                 "train_gflops", "wall_s", "peak_step_mb", "selection", "budget"):
    assert column in table[0], column
  by = {r["variant"]: r for r in table}
  assert by["ridge"]["hyperparams"].startswith("l2_reg=")
  assert int(by["full_finetune"]["trainable_params"]) > int(by["ridge"]["trainable_params"]) > 0
  assert float(by["full_finetune"]["train_gflops"]) > 0 and float(by["full_finetune"]["peak_step_mb"]) > 0
  # WiSE-FT trains nothing itself: its cost is its fine-tune's.
  assert by["wise"]["train_gflops"] == by["full_finetune"]["train_gflops"]
  for name in ("results.md", "comparisons.md", "results.png", "cost.png", "ood.png", "summary.csv"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  text = open(os.path.join(workdir, "comparisons.md")).read()
  assert "FT vs ridge (`full_finetune` − `ridge`, test)" in text and "no test is possible" in text


def test_restart_skips_finished_trials_and_cells(finished, pretrained):
  workdir, _ = finished
  results = os.path.join(workdir, "results.jsonl")
  lines = open(results).read().splitlines()
  ft = next(i for i, line in enumerate(lines) if json.loads(line)["variant"] == "full_finetune")
  dropped = json.loads(lines[ft])
  trials = open(os.path.join(workdir, "trials.jsonl")).read().splitlines()
  keep = [t for t in trials if (json.loads(t)["cell"], json.loads(t)["point_id"])
          != (dropped["cell"], "optim.lr=0.03")]
  assert len(keep) == len(trials) - 1
  with open(os.path.join(workdir, "trials.jsonl"), "w") as f:
    f.write("\n".join(keep) + "\n")
  with open(results, "w") as f:  # the cell and its student (wise) are redone
    f.write("\n".join(line for line in lines if json.loads(line)["variant"] not in
                      ("full_finetune", "wise")) + "\n")
  log = os.path.join(workdir, "log.txt")
  rows = _run(_config(pretrained), workdir, log)
  out = open(log).read()
  assert out.count("  trial ") == 1 and "optim.lr=0.03" in out   # only the missing trial
  assert out.count("[benchmark ") == 2 and len(rows) == 3
  redone = next(r for r in rows if r["variant"] == "full_finetune")
  assert redone["chosen"] == dropped["chosen"] and redone["test_top1"] == dropped["test_top1"]


@pytest.mark.parametrize("change, error", [
    (lambda c: setattr(c.variants.ridge, "selection", "fixed"), "selection='fixed' runs one point"),
    (lambda c: setattr(c.protocol, "val_fraction", 0.0), "selecting on the test split"),
    (lambda c: setattr(c.variants.ridge, "search", (("k", (1, 2)),)), "ridge takes"),
    (lambda c: setattr(c.variants.wise, "search", (("alpha", (0.5, 1.5)),)), "outside"),
    (lambda c: setattr(c.variants.full_finetune, "search", (("optim.lrr", (1.0,)),)),
     "unknown config key"),
])
def test_bad_search_spaces_fail_before_running(change, error, pretrained):
  config = _config(pretrained)
  change(config)
  with pytest.raises((ValueError, KeyError), match=error):
    harness.validate(config)
