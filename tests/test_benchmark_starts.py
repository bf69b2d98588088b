"""Named starts (benchmark/starts.py) end to end: a Reptile start and a supervised source start
made once on MNIST-5k, variants on UCI digits that start from them, reuse on restart."""

import io
import json
import os

import jax
from ml_collections import config_dict
import numpy as np
import pytest
import support

from jtransfer import weights
from jtransfer.benchmark import harness, starts
from jtransfer.train import trainer

REPTILE = {"ways": 3, "shots": 2, "meta_batch": 2, "inner_steps": 2, "meta_steps": 2}


def tiny_config():
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": False})
  c.base = support.tiny_experiment("uci_digits", steps=2)
  c.datasets = ("uci_digits",)
  c.shots = (2,)
  c.seeds = (0,)
  c.shot_overrides = {}
  c.starts = config_dict.ConfigDict({
      "reptile": starts.start("reptile", dataset="mnist5k", init="scratch", args=REPTILE),
      "source_ft": starts.start("train", dataset="mnist5k", init="scratch",
                                overrides=(("train.num_steps", 2),)),
  })
  c.variants = config_dict.ConfigDict({
      "scratch": harness.variant("train", init="scratch"),
      "reptile_ft": harness.variant("train", init="reptile"),
      "source_ft": harness.variant("train", init="source_ft"),
      "ncm_reptile": harness.variant("ncm", init="reptile"),
  })
  c.order = ("scratch", "reptile_ft", "source_ft", "ncm_reptile")
  return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("bench"))
  with open(os.devnull, "w") as sink:
    rows = harness.run(tiny_config(), workdir, stream=sink)
  return workdir, {r["variant"]: r for r in rows}


def _backbone(tree):
  return {k: v for k, v in tree.items() if k != "fc"}


def test_variants_start_from_the_start_they_name(finished):
  workdir, rows = finished
  for name, init in (("reptile_ft", "reptile"), ("source_ft", "source_ft"),
                     ("ncm_reptile", "reptile")):
    assert rows[name]["init"] == init
    assert rows[name]["config"]["model"]["init"] == os.path.join(workdir, "starts", init, "export")
  assert rows["scratch"]["config"]["model"]["init"] == ""
  # The fine-tune's first step starts from the meta-learned backbone (the source head dropped).
  r = rows["reptile_ft"]
  cfg = config_dict.ConfigDict(r["config"])
  start, _ = trainer.init_variables(trainer.build_model(cfg.model, 10), cfg.model, (8, 8, 3), 0)
  learned = weights.load(cfg.model.init)
  assert learned["params"]["fc"]["kernel"].shape[-1] == REPTILE["ways"]
  same = jax.tree.map(np.array_equal, _backbone(start["params"]), _backbone(learned["params"]))
  assert all(jax.tree.leaves(same))
  assert start["params"]["fc"]["kernel"].shape[-1] == 10


def test_reptile_start_moved_the_backbone_and_records_its_cost(finished):
  workdir, _ = finished
  run_dir = os.path.join(workdir, "starts", "reptile")
  facts = json.load(open(os.path.join(run_dir, "result.json")))
  a = REPTILE
  assert facts["examples_seen"] == (a["meta_steps"] * a["meta_batch"] * a["inner_steps"]
                                    * a["ways"] * a["shots"])
  assert facts["kind"] == "reptile" and facts["dataset"] == "mnist5k" and facts["wall_s"] > 0
  assert np.isfinite(facts["adapted_loss_first"]) and np.isfinite(facts["adapted_loss_last"])
  losses = np.load(os.path.join(run_dir, "inner_losses.npy"))
  assert losses.shape == (a["meta_steps"], a["meta_batch"], a["inner_steps"])
  cfg = config_dict.ConfigDict(json.load(open(os.path.join(run_dir, "config.json"))))
  assert cfg.data.dataset == "mnist5k" and cfg.model.init == ""
  fresh, _ = trainer.init_variables(trainer.build_model(cfg.model, a["ways"]), cfg.model,
                                    (8, 8, 3), int(cfg.train.seed))
  learned = weights.load(os.path.join(run_dir, "export"))
  moved = jax.tree.map(lambda x, y: not np.array_equal(x, y), _backbone(fresh["params"]),
                       _backbone(learned["params"]))
  assert any(jax.tree.leaves(moved))
  assert not np.any(learned["params"]["fc"]["kernel"])  # head_init='zero' exports a zero head
  src = json.load(open(os.path.join(workdir, "starts", "source_ft", "result.json")))
  assert src["steps"] == 2 and src["examples_seen"] == 2 * 16 and 0 <= src["source_top1"] <= 1


def test_a_restart_reuses_the_starts(finished):
  workdir, _ = finished
  export = os.path.join(workdir, "starts", "reptile", "export")
  stamp = os.path.getmtime(export)
  log = io.StringIO()
  harness.run(tiny_config(), workdir, stream=log)
  assert "reusing start 'reptile'" in log.getvalue()
  assert "reusing start 'source_ft'" in log.getvalue()
  assert os.path.getmtime(export) == stamp


@pytest.mark.parametrize("edit, message", [
    (lambda c: setattr(c.variants.reptile_ft, "init", "reptil"),
     r"variants.reptile_ft.init='reptil'; known: pretrained, scratch, reptile, source_ft"),
    (lambda c: setattr(c.starts.reptile, "kind", "maml"), r"starts.reptile.kind='maml'"),
    (lambda c: setattr(c.starts.reptile, "args", {"way": 3}), r"starts.reptile: reptile takes"),
    (lambda c: setattr(c.starts.reptile, "args", {"inner_steps": 1}), r"inner_steps >= 2"),
    (lambda c: setattr(c.starts.source_ft, "overrides", (("train.num_step", 2),)),
     r"starts.source_ft.overrides: unknown config key 'train.num_step'"),
    (lambda c: setattr(c.starts, "scratch", starts.start("train", dataset="mnist5k")),
     r"starts.scratch: the names .* are taken"),
])
def test_bad_starts_are_named_before_anything_runs(edit, message, tmp_path):
  config = tiny_config()
  edit(config)
  with pytest.raises((ValueError, KeyError), match=message):
    harness.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "starts")
