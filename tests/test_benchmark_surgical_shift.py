"""Surgical fine-tuning as Lee et al. run it: one stage trains on labelled examples of the shifted
distribution (the corruption applied to the training draw and to validation), the stage is chosen
per shift on that shifted validation, and the test still uses the clean pipeline plus the
harness's shifted copies."""

import os

from ml_collections import config_dict
import pytest
import support

from jtransfer.benchmark import harness
from jtransfer.workdir import RunDir

SHIFT = ("gaussian_noise", 3)


def _config():
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": False})
  c.base = support.tiny_experiment("uci_digits", 2)
  c.datasets = ("uci_digits",)
  c.shots = (2,)
  c.seeds = (0,)
  c.shot_overrides = {}
  c.protocol = config_dict.ConfigDict({"val_per_class": 10})
  c.shifts = (SHIFT,)
  c.variants = config_dict.ConfigDict({
      "surgical_noise": harness.variant("surgical_shift", init="scratch",
                                        args={"shift": "gaussian_noise-3"},
                                        search={"stage": (1, 4)}),
  })
  c.order = ("surgical_noise",)
  return c


def _corruptions(pp):
  return [dict(op) for op in pp if hasattr(op, "get") and op.get("op") == "corrupt"]


def test_the_training_draw_and_validation_are_corrupted():
  config = _config()
  cell = harness.Cell("uci_digits", "surgical_noise", 2, 0)
  cfg = harness.cell_config(config, cell, pretrained="", point={"stage": 4},
                            splits=harness.splits_for(config, "uci_digits", 2))
  for pp in (cfg.data.pp_train, cfg.data.pp_eval):
    (op,) = _corruptions(pp)
    assert (op["name"], op["severity"]) == SHIFT
  rules = [tuple(r) for r in cfg.freezing.param_rules]
  assert rules[-1] == (".*", "frozen") and len(rules) == 3  # the head, stage 4, the rest frozen


def test_it_runs_chooses_a_stage_on_the_shifted_validation_and_tests_cleanly(tmp_path):
  with open(os.devnull, "w") as sink:
    (row,) = harness.run(_config(), str(tmp_path), stream=sink)
  assert row["chosen"]["stage"] in (1, 4) and row["budget"] == 2
  run = RunDir(row["run_dir"]).read_config()
  assert _corruptions(run.data.pp_train) and _corruptions(run.data.pp_eval)
  assert set(row["ood"]) == {"gaussian_noise-3"} and row["metrics"]["num_examples"] == 450


def test_an_unknown_shift_is_named():
  config = _config()
  config.variants.surgical_noise.args = {"shift": "contrast-3"}
  with pytest.raises(ValueError, match="shift='contrast-3' must name one of config.shifts"):
    harness.validate(config)
