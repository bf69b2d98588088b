"""Runs of one process share compiled programs (train.programs), and sharing changes no number."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import support

from jtransfer import optim, weights
from jtransfer.train import parallel, programs, trainer
from jtransfer.train.task import Task


def _run(config, path, seed: int) -> tuple[dict, dict]:
  config.train.seed = seed
  result = trainer.train_and_evaluate(config, str(path), source=support.tiny_source())
  return result, weights.load(str(path / "export"))


def _metrics(path) -> list[dict]:
  return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_a_second_seed_reuses_the_programs_and_matches_a_fresh_compile(tmp_path):
  config = support.tiny_config(num_steps=3, eval_every=3, ckpt_every=3)
  programs.clear()
  _run(config, tmp_path / "a", seed=0)
  first = programs.stats()
  assert first["hits"] == 0 and first["misses"] == 3  # init, train step, eval step

  shared_result, shared_vars = _run(config, tmp_path / "b", seed=1)
  assert programs.stats()["misses"] == first["misses"]  # nothing new was built
  assert programs.stats()["hits"] == 3

  programs.clear()  # the same seed-1 run, every program built afresh
  fresh_result, fresh_vars = _run(config, tmp_path / "c", seed=1)
  assert programs.stats()["hits"] == 0
  for a, b in zip(jax.tree.leaves(shared_vars), jax.tree.leaves(fresh_vars), strict=True):
    np.testing.assert_array_equal(a, b)
  assert shared_result["eval"]["top1"] == fresh_result["eval"]["top1"]
  strip = lambda ms: [{k: v for k, v in m.items() if "per_s" not in k and k != "wall_s"} for m in ms]
  assert strip(_metrics(tmp_path / "b")) == strip(_metrics(tmp_path / "c"))
  # And the seed matters: seed 0's weights differ (the seed is an input, not a constant).
  _, seed0_vars = _run(config, tmp_path / "d", seed=0)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(seed0_vars), jax.tree.leaves(fresh_vars)))


def test_a_different_learning_rate_shares_the_program_and_matches_a_fresh_compile(tmp_path):
  config = support.tiny_config(num_steps=2, eval_every=2, ckpt_every=2)
  programs.clear()
  _, slow_vars = _run(config, tmp_path / "a", seed=0)
  misses = programs.stats()["misses"]
  config.optim.lr = 0.01
  _, shared_vars = _run(config, tmp_path / "b", seed=0)
  assert programs.stats()["misses"] == misses  # the learning rate is an input of the step
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(slow_vars),
                                                      jax.tree.leaves(shared_vars)))
  programs.clear()
  _, fresh_vars = _run(config, tmp_path / "c", seed=0)
  for a, b in zip(jax.tree.leaves(shared_vars), jax.tree.leaves(fresh_vars), strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_rule_with_its_own_learning_rate_keys_the_program_on_the_base_one():
  params = {"fc": {"kernel": np.zeros((2, 2), np.float32)}}
  own = [(".*", {"lr_mult": 1.0, "schedule": {"lr": 0.5}})]
  plain = [(".*", 1.0)]
  par = parallel.create("jit")
  keys = {}
  for lr in (0.1, 0.2):
    config = support.tiny_config()
    config.optim.lr = lr
    for name, rules in (("own", own), ("plain", plain)):
      phase = optim.Phase(start_step=0, param_rules=tuple(rules))
      keys[name, lr] = trainer.program_key(config, Task(config), phase, params, 10, par)
  assert keys["plain", 0.1] == keys["plain", 0.2]
  assert keys["own", 0.1] != keys["own", 0.2]


@pytest.mark.parametrize("field,value", [
    ("train.seed", 7), ("data.shots", 5), ("data.fewshot_seed", 3), ("model.init", "/w"),
    ("data.train_split", "train[:10]"), ("train.eval_every", 9), ("loss.distill.teacher", "/t"),
    ("optim.lr", 0.5),
])
def test_run_only_fields_leave_the_key(field, value):
  config = support.tiny_config()
  before = programs.config_key(config)
  config.update_from_flattened_dict({field: value})
  assert programs.config_key(config) == before


@pytest.mark.parametrize("field,value", [
    ("optim.b1", 0.5), ("train.num_steps", 99), ("loss.label_smoothing", 0.1),
    ("freezing.l2sp_alpha", 0.1), ("model.base_planes", 16), ("optim.ema_decay", 0.9),
    ("data.batch_size", 3), ("data.mixup_alpha", 0.2), ("adapt.gamma", 3.0),
])
def test_every_other_field_is_in_the_key(field, value):
  config = support.tiny_config()
  before = programs.config_key(config)
  config.update_from_flattened_dict({field: value})
  assert programs.config_key(config) != before


def test_the_cache_is_bounded_and_clear_forgets():
  programs.clear()
  built = []
  for i in range(programs.MAX_PROGRAMS + 3):
    programs.shared(("k", i), lambda i=i: built.append(i) or i)
  assert programs.stats()["held"] == programs.MAX_PROGRAMS
  assert programs.shared(("k", 0), lambda: "rebuilt") == "rebuilt"  # the oldest went first
  assert programs.shared(("k", programs.MAX_PROGRAMS + 2), lambda: "no") == programs.MAX_PROGRAMS + 2
  programs.clear()
  assert programs.stats() == {"hits": 0, "misses": 0, "held": 0}
