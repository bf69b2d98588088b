"""Orbax checkpoints: which stay, strict restore onto shardings, half-written ones, early stopping."""

import os

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from jtransfer.train import checkpointing


def _state(v):
  return {"params": {"w": jnp.full((3,), float(v)), "b": jnp.zeros((2, 2)) + v},
          "step": jnp.asarray(v, jnp.int32)}


def test_keeps_last_k_and_the_best_earliest_on_ties(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"), keep=2, best_metric="top1")
  evals = {2: 0.5, 4: 0.9, 6: 0.3, 8: 0.9, 10: 0.1}
  for s in range(1, 11):
    ck.save(s, _state(s), meta={"s": s}, metrics={"top1": evals[s]} if s in evals else None)
  ck.wait()
  assert ck.all_steps() == [4, 9, 10]
  assert ck.best_step() == 4 and ck.latest_step() == 10
  state, meta = ck.restore(4, _state(0))
  assert meta == {"s": 4} and int(state["step"]) == 4
  np.testing.assert_array_equal(state["params"]["w"], [4.0, 4.0, 4.0])
  ck.close()


def test_min_mode_for_loss(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path), keep=1, best_metric="loss", best_mode="min")
  for s, loss in ((1, 0.7), (2, 0.2), (3, 0.4)):
    ck.save(s, _state(s), metrics={"loss": loss})
  ck.wait()
  assert ck.best_step() == 2 and ck.all_steps() == [2, 3]
  with pytest.raises(KeyError, match="best_metric 'loss' not among"):
    ck.save(4, _state(4), metrics={"top1": 1.0})
  ck.close()


def test_restore_onto_shardings_and_refuse_a_mismatch(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path), keep=1, best_metric=None, async_save=False)
  ck.save(1, _state(1))
  replicated = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), P())
  abstract = jax.eval_shape(lambda: _state(0))
  state, _ = ck.restore(1, abstract, jax.tree.map(lambda _: replicated, abstract))
  assert state["params"]["w"].sharding == replicated
  wrong = {"params": {"w": jnp.zeros((4,)), "c": jnp.zeros(())}, "step": jnp.zeros((), jnp.int32)}
  with pytest.raises(checkpointing.CheckpointMismatchError) as e:
    ck.restore(1, wrong)
  msg = str(e.value)
  assert "params/w: checkpoint (3,) float32 vs state (4,) float32" in msg
  assert "missing in checkpoint: params/c" in msg and "unexpected in checkpoint: params/b" in msg
  ck.close()


def test_half_written_checkpoint_is_never_seen_and_cleaned_up(tmp_path):
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3, best_metric=None, async_save=False)
  ck.save(1, _state(1))
  ck.close()
  # What a process killed while writing step 2 leaves behind: Orbax's temporary directory.
  tmp = tmp_path / "2.orbax-checkpoint-tmp-1234"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "garbage").write_text("half")
  ck = checkpointing.Checkpointer(str(tmp_path), keep=3, best_metric=None)
  assert ck.latest_step() == 1 and ck.all_steps() == [1]
  ck.wait()
  ck.save(2, _state(2))
  ck.close()
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_early_stopping_counts_strict_improvements_and_round_trips():
  es = checkpointing.EarlyStopping("top1", patience=2)
  assert es.update(1, {"top1": 0.5}) and not es.should_stop
  assert not es.update(2, {"top1": 0.5})          # equal is no improvement
  assert es.update(3, {"top1": 0.6}) and es.bad_evals == 0
  es.update(4, {"top1": 0.1})
  again = checkpointing.EarlyStopping("top1", patience=2)
  again.load_state(es.state())
  assert not again.should_stop
  again.update(5, {"top1": float("nan")})
  assert again.should_stop and again.best_step == 3
  assert not checkpointing.EarlyStopping("loss", mode="min").should_stop  # patience 0: never
