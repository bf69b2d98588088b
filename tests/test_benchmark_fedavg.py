"""The harness's 'fedavg' kind end to end on real offline data (tiny model, from scratch)."""

import json
import os

import jax
from ml_collections import config_dict
import numpy as np
import pytest
import support

from jtransfer import optim, weights
from jtransfer.benchmark import harness
from jtransfer.train import trainer


def tiny_config():
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": False})
  c.base = support.tiny_experiment("uci_digits", steps=2)
  c.datasets = ("uci_digits",)
  c.shots = (4,)
  c.seeds = (0,)
  c.shot_overrides = {}
  head_only = optim.get_freezing_config("linear_probe")
  c.variants = config_dict.ConfigDict({
      "full_finetune": harness.variant("train", init="scratch"),
      "fedavg_full": harness.variant("fedavg", init="scratch",
                                     args={"num_clients": 2, "local_steps": 1, "alpha": 0.5}),
      "fedavg_head": harness.variant("fedavg", init="scratch", freezing=head_only,
                                     args={"num_clients": 2, "local_steps": 1}),
  })
  c.order = ("full_finetune", "fedavg_full", "fedavg_head")
  return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("bench"))
  with open(os.devnull, "w") as sink:
    rows = harness.run(tiny_config(), workdir, stream=sink)
  return workdir, {r["variant"]: r for r in rows}


def test_fedavg_cells_are_evaluated_like_trained_ones_and_count_what_they_send(finished):
  workdir, rows = finished
  for name in ("fedavg_full", "fedavg_head"):
    r = rows[name]
    assert 0.0 <= r["test_top1"] <= 1.0 and r["ood"] == {}
    assert os.path.isdir(os.path.join(r["run_dir"], "export"))
    assert r["config"]["data"]["shots"] == 4
    facts = json.load(open(os.path.join(r["run_dir"], "fedavg.json")))
    assert facts["rounds"] == 2 and sum(facts["clients"]) == 40  # 4 shots x 10 classes
  full, head = rows["fedavg_full"], rows["fedavg_head"]
  assert full["trainable_params"] == rows["full_finetune"]["trainable_params"]
  assert head["trainable_params"] < full["trainable_params"] / 10
  assert head["bytes_per_round"] == 2 * 2 * 4 * head["trainable_params"]  # down+up, 2 clients, f32


def test_fedavg_cells_count_every_client_step_and_their_peak_memory(finished):
  _, rows = finished
  central, full, head = rows["full_finetune"], rows["fedavg_full"], rows["fedavg_head"]
  # 2 rounds x 2 clients x 1 local step of 8 examples vs 2 steps of 16: the same examples, so
  # about the same flops (each client step also pays its optimizer update). A count of the
  # round program's loops once (XLA's cost_analysis) would give about half.
  assert 0.85 < full["train_gflops"] / central["train_gflops"] < 1.3
  assert head["train_gflops"] < 0.7 * full["train_gflops"]  # no backward through the backbone
  assert full["peak_bytes"] > 0 and head["peak_bytes"] > 0


def test_head_only_fedavg_never_moves_the_backbone(finished):
  _, rows = finished
  r = rows["fedavg_head"]
  cfg = config_dict.ConfigDict(r["config"])
  tuned = weights.load(os.path.join(r["run_dir"], "export"))
  model = trainer.build_model(cfg.model, 10)
  start, _ = trainer.init_variables(model, cfg.model, (8, 8, 3), cfg.train.seed)
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), start["params"], tuned["params"])
  assert moved["fc"]["kernel"]
  assert not any(jax.tree.leaves({k: v for k, v in moved.items() if k != "fc"}))


def test_bad_fedavg_arguments_are_named_before_anything_runs():
  config = tiny_config()
  config.variants.fedavg_full.args = {"clients": 2}
  with pytest.raises(ValueError, match=r"variants.fedavg_full: fedavg takes .*clients"):
    harness.validate(config)
  config.variants.fedavg_full.args = {"num_clients": 0}
  with pytest.raises(ValueError, match="num_clients=0 must be an int >= 1"):
    harness.validate(config)
