"""What a workdir guarantees through the trainer (docs/training.md "What a workdir guarantees"):
identity checked before anything is touched, one run at a time, labels against the head, a split
smaller than a batch, each metrics step once after a restart, and a clear NaN message."""

import json
import os

import numpy as np
import pytest
import support as testing

from jtransfer import optim
from jtransfer import workdir as wd
from jtransfer.train import checkpointing, trainer, writers


@pytest.fixture(scope="module", autouse=True)
def _compile_once(tmp_path_factory):
  with testing.compilation_cache(tmp_path_factory.getbasetemp() / "jax_cache"):
    yield


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = testing.tiny_config(num_steps=4, eval_every=0, ckpt_every=2)
  trainer.train_and_evaluate(config, workdir, source=testing.tiny_source())
  return config, workdir


def _snapshot(workdir):
  out = {}
  for name in ("config.json", "identity.json", "metrics.jsonl", "result.json"):
    with open(os.path.join(workdir, name)) as f:
      out[name] = f.read()
  return out


def test_a_changed_config_is_refused_before_anything_changes(finished):
  config, workdir = finished
  before = _snapshot(workdir)
  changed = config.copy_and_resolve_references()
  changed.optim.lr = 0.5
  changed.model.num_classes = 7
  with pytest.raises(wd.WorkdirMismatchError, match=r"(?s)model\.num_classes.*optim\.lr"):
    trainer.train_and_evaluate(changed, workdir, source=testing.tiny_source())
  assert _snapshot(workdir) == before  # config.json included: the workdir still tells the truth
  cosmetic = config.copy_and_resolve_references()
  cosmetic.train.log_every = 3  # not result-changing: resumes (here: only re-exports)
  assert trainer.train_and_evaluate(cosmetic, workdir, source=testing.tiny_source())["step"] == 4


def test_a_second_run_on_a_held_workdir_is_refused(finished):
  config, workdir = finished
  before = _snapshot(workdir)
  with wd.WorkdirLock(workdir):  # another run holds it
    with pytest.raises(wd.WorkdirInUseError, match=rf"in use by pid {os.getpid()}"):
      trainer.train_and_evaluate(config, workdir, source=testing.tiny_source())
  assert _snapshot(workdir) == before


def test_a_head_smaller_than_the_labels_stops_before_any_step(tmp_path):
  config = testing.tiny_config(num_steps=2)
  config.model.num_classes = 3  # the data has 4 classes
  with pytest.raises(ValueError, match=r"model\.num_classes=3 is smaller than the 4 classes"):
    trainer.train_and_evaluate(config, str(tmp_path), source=testing.tiny_source())
  assert not os.listdir(tmp_path / "checkpoints")


def test_a_split_smaller_than_a_batch_is_an_error_or_an_explicit_repeat(tmp_path):
  config = testing.tiny_config(num_steps=1, eval_every=0, ckpt_every=0)
  source = testing.tiny_source(batch_size=16, num_train=4)
  with pytest.raises(ValueError, match=r"4 train examples, fewer than one batch of 16.*repeat_small"):
    trainer.train_and_evaluate(config, str(tmp_path / "a"), source=source)
  config.data.repeat_small = True
  assert trainer.train_and_evaluate(config, str(tmp_path / "b"), source=source)["step"] == 1


def test_restart_from_an_earlier_step_keeps_each_metrics_step_once(tmp_path):
  config = testing.tiny_config(num_steps=4, eval_every=0, ckpt_every=2, log_every=1)
  workdir = str(tmp_path)
  first = trainer.train_and_evaluate(config, workdir, source=testing.tiny_source())
  config.train.resume_from_step = 2
  again = trainer.train_and_evaluate(config, workdir, source=testing.tiny_source())
  steps = [l["step"] for l in writers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
           if "train/loss" in l]
  assert steps == [1, 2, 3, 4]
  assert again["eval"]["loss"] == pytest.approx(first["eval"]["loss"], rel=1e-5)  # same (seed, step)
  config.train.resume_from_step = 3
  with pytest.raises(ValueError, match=r"resume_from_step=3: no checkpoint.*kept: \[2, 4\]"):
    trainer.train_and_evaluate(config, workdir, source=testing.tiny_source())


class _Poisoned(testing.inputs.ArraySource):
  def __init__(self):
    super().__init__(*testing.tiny_arrays(), batch_size=8, eval_batch_size=8)

  def train_iterator(self, *, seed, start_step, process_index=0, process_count=1):
    for i, batch in enumerate(super().train_iterator(seed=seed, start_step=start_step)):
      yield {**batch, "image": batch["image"] * (1e30 if start_step + i >= 2 else 1.0)}


def test_non_finite_stop_names_the_safe_steps(tmp_path):
  config = testing.tiny_config(num_steps=6, eval_every=0, ckpt_every=2, log_every=1)
  config.optim.lr = 1e3
  with pytest.raises(trainer.NonFiniteLossError, match=r"Kept checkpoints before it: \[2\]"):
    trainer.train_and_evaluate(config, str(tmp_path), source=_Poisoned())
  ck = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), best_metric=None)
  assert ck.all_steps() == [2]
  ck.close()


def test_switching_the_strategy_alone_names_the_stale_argument():
  config = testing.tiny_config()
  config.freezing = optim.get_freezing_config("linear_probe")
  config.freezing.strategy = "lp_ft"  # as --config.freezing.strategy=lp_ft does
  with pytest.raises(ValueError, match=r"strategy_args has \['head_lr_mult'\].*'lp_ft'"):
    optim.phases(config)


def test_identity_records_the_result_changing_fields(finished):
  _, workdir = finished
  with open(os.path.join(workdir, "identity.json")) as f:
    identity = json.load(f)
  assert "optim.lr" in identity["fields"] and "train.log_every" not in identity["fields"]
  assert np.isfinite(identity["num_steps"])
