"""LP-FT and WiSE-FT as their papers define them: LP-FT's head starts as the converged logistic
probe fitted on the cell's draw; WiSE-FT's θ0 is that probe model (α = 0 predicts as the probe
does) and θ1 the fine-tune from it; the α curve is reported; selection never reads test labels."""

import json
import os

from ml_collections import config_dict
import numpy as np
import pytest
import support

from jtransfer import optim, weights
from jtransfer.benchmark import evaluation, evaluators, features, harness, kinds
from jtransfer.benchmark.kinds import features as features_kind
from jtransfer.workdir import RunDir

ALPHAS = (0.0, 0.5, 1.0)


def _config(init: str):
  c = config_dict.ConfigDict()
  exp = support.tiny_experiment("uci_digits", 3, init=init)
  c.pretrain = config_dict.ConfigDict({"enabled": False, "config": exp})
  c.base = support.tiny_experiment("uci_digits", 3, init=init)
  c.datasets = ("uci_digits",)
  c.shots = (3,)
  c.seeds = (0,)
  c.shot_overrides = {}
  c.protocol = config_dict.ConfigDict({"val_per_class": 10})
  c.shifts = (("gaussian_noise", 3),)
  full_ft = optim.get_freezing_config("full_ft")
  c.variants = config_dict.ConfigDict({
      "logreg": harness.variant("logreg", search={"C": (0.1, 10.0)}),
      "lp_ft": harness.variant("lp_ft", teacher="logreg", freezing=full_ft,
                               search={"optim.lr": (1e-3, 1e-2)}),
      "wise": harness.variant("wise", teacher="lp_ft", search={"alpha": ALPHAS}),
  })
  c.order = ("logreg", "lp_ft", "wise")
  return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """Random-init 'pretrained' weights with their model.json: no pretraining run needed."""
  return support.random_pretrained(str(tmp_path_factory.mktemp("weights")))


def _run(config, workdir):
  with open(os.devnull, "w") as sink:
    return harness.run(config, workdir, stream=sink)


def _trials(workdir):
  with open(os.path.join(workdir, "trials.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, pretrained):
  workdir = str(tmp_path_factory.mktemp("bench"))
  return workdir, _run(_config(pretrained), workdir)


def _by_variant(rows):
  return {r["variant"]: r for r in rows}


def _probe(workdir, pretrained, rows):
  """The logreg fit of the cell's chosen C on its draw, as the test recomputes it."""
  config = _config(pretrained)
  cell = harness.Cell("uci_digits", "logreg", 3, 0)
  splits = harness.splits_for(config, "uci_digits", 3)
  cfg = harness.cell_config(config, cell, pretrained=pretrained, splits=splits)
  cache = features.FeatureCache(os.path.join(workdir, "features"))
  ctx = type("Ctx", (), {"config": config, "cache": cache})()
  x, y = evaluation.few(cell, *features_kind.feature_arrays(ctx, cfg, splits.pool))
  C = _by_variant(rows)["logreg"]["chosen"]["C"]
  return evaluators.fit_logreg(x, y, num_classes=10, C=C), ctx, cfg, splits


def test_lp_ft_head_starts_as_the_converged_probe(finished, pretrained):
  workdir, rows = finished
  fit, *_ = _probe(workdir, pretrained, rows)
  start = RunDir(os.path.join(workdir, "runs", "uci_digits", "lp_ft", "shots-3", "seed-0",
                              "probe_start"))
  variables = weights.load(start.export)
  np.testing.assert_allclose(variables["params"]["fc"]["kernel"], fit["kernel"], rtol=1e-6)
  np.testing.assert_allclose(variables["params"]["fc"]["bias"], fit["bias"], rtol=1e-6)
  lp = _by_variant(rows)["lp_ft"]
  assert lp["probe_C"] == _by_variant(rows)["logreg"]["chosen"]["C"]
  assert lp["probe_converged"] is True
  # Every trial trained from that start, the head included (nothing skipped).
  for name in ("optim.lr=0.001", "optim.lr=0.01"):
    cfg = RunDir(os.path.join(os.path.dirname(start.path), name)).read_config()
    assert cfg.model.init == start.export and tuple(cfg.model.init_skip) == ()


def test_wise_alpha_zero_is_the_probe_model(finished, pretrained):
  workdir, rows = finished
  fit, ctx, cfg, splits = _probe(workdir, pretrained, rows)
  tx, ty = features_kind.feature_arrays(ctx, cfg, splits.test)
  probe_top1 = float(np.mean(np.argmax(tx @ fit["kernel"] + fit["bias"], -1) == ty))
  wise = _by_variant(rows)["wise"]
  assert wise["wise_theta0"] == "probe"
  assert set(wise["alpha_curve"]) == {str(a) for a in ALPHAS}
  assert wise["alpha_curve"]["0.0"]["test_top1"] == pytest.approx(probe_top1, abs=1e-9)
  # α = 1 is the chosen LP-FT fine-tune itself.
  assert wise["alpha_curve"]["1.0"]["test_top1"] == _by_variant(rows)["lp_ft"]["test_top1"]
  chosen = str(float(wise["chosen"]["alpha"]))
  assert wise["alpha_curve"][chosen]["test_top1"] == wise["test_top1"]


def test_lp_ft_needs_a_logreg_probe(pretrained):
  config = _config(pretrained)
  config.variants.lp_ft.teacher = ""
  with pytest.raises(ValueError, match="needs teacher"):
    harness.validate(config)
  config = _config(pretrained)
  config.variants.ridge = harness.variant("ridge", search={"l2_reg": (1.0,)})
  config.variants.lp_ft.teacher = "ridge"
  config.order = ("ridge", "logreg", "lp_ft", "wise")
  with pytest.raises(ValueError, match="'logreg' variant"):
    harness.validate(config)


def test_selection_never_reads_the_test_split(finished, pretrained, tmp_path, monkeypatch):
  workdir, rows = finished
  run = lambda: (_run(_config(pretrained), str(tmp_path)), _trials(str(tmp_path)))
  support.assert_selection_ignores_test_labels(run, rows, _trials(workdir), monkeypatch)
  assert kinds.get("lp_ft").needs_teacher
