"""RunDir: the one owner of a run directory's file names; its reads fail loudly, and
``latest_step`` is Orbax's (an unfinished save is not a checkpoint)."""

import os

from ml_collections import config_dict
import numpy as np
import pytest

from jtransfer.train import checkpointing
from jtransfer.workdir import RunDir


def test_config_and_result_round_trip_and_finished_needs_both(tmp_path):
  rd = RunDir(tmp_path / "run")
  assert rd.read_config() is None and rd.read_result() is None and not rd.finished()
  os.makedirs(rd.path)
  cfg = config_dict.ConfigDict({"model": {"arch": "resnet18"}, "train": {"num_steps": 3}})
  rd.write_config(cfg)
  assert rd.read_config().to_dict() == cfg.to_dict()
  rd.write_result({"step": 3})
  assert not rd.finished()  # no export yet
  os.makedirs(rd.export)
  assert rd.finished() and rd.read_result() == {"step": 3}


def test_a_torn_config_is_an_error_naming_the_file(tmp_path):
  rd = RunDir(tmp_path)
  with open(rd.config_json, "w") as f:
    f.write('{"model": {"arch": "res')
  with pytest.raises(ValueError, match="config.json is not valid JSON"):
    rd.read_config()


def test_latest_step_is_orbax_s_and_ignores_a_killed_save(tmp_path):
  rd = RunDir(tmp_path)
  assert rd.latest_step() is None and rd.latest_state() is None
  ckpt = checkpointing.Checkpointer(rd.checkpoints, best_metric=None, async_save=False)
  state = {"params": {"w": np.ones(3, np.float32)}}
  for step in (2, 5):
    ckpt.save(step, state)
  ckpt.wait()
  ckpt.close()
  # What a kill during a save leaves: a temporary directory Orbax never finalised.
  os.makedirs(os.path.join(rd.checkpoints, "9.orbax-checkpoint-tmp-123"))
  assert rd.latest_step() == 5
  step, restored = rd.latest_state()
  assert step == 5
  np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
