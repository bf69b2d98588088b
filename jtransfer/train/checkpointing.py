"""Orbax checkpoints of the train state: keep the last K and the best one, resume from the latest.

    ckpt = checkpointing.Checkpointer(workdir + "/checkpoints", keep=3, best_metric="top1")
    ckpt.save(step, state, meta={"early_stopping": ...}, metrics=eval_metrics)  # async
    step = ckpt.latest_step()                        # None on a fresh run
    state, meta = ckpt.restore(step, abstract_state)  # onto abstract_state's shardings
    ckpt.close()                                     # waits for the last save

A checkpoint holds two items: ``state`` (the ``TrainState`` pytree) and ``meta`` (JSON: the loop's
own bookkeeping, such as early stopping). Orbax writes each step into a temporary directory and
renames it when every process has finished, so ``latest_step`` never sees a half-written
checkpoint; one killed mid-write leaves only a temporary directory, removed on the next start.

Which checkpoints stay: the ``keep`` most recent, plus the one with the best ``best_metric`` among
those saved with metrics (ties: the earliest, as early stopping counts improvement strictly).
Restoring checks every leaf's shape and dtype against the abstract state and raises on mismatch.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jtransfer.optim.rules import path_str


class CheckpointMismatchError(ValueError):
  """A checkpoint that does not fit the state it is restored into."""


def _sort_key(mode: str):
  """Key for Orbax's BestN over ``{'value', 'step'}``: better sorts later, ties favour early steps."""
  def key(m: Mapping[str, float]):
    v = float(m["value"])
    if math.isnan(v):
      v = -math.inf if mode == "max" else math.inf
    return (v, -m["step"]) if mode == "max" else (v, m["step"])
  return key


class Checkpointer:
  """A thin, strict wrapper around ``ocp.CheckpointManager`` (call every method on every process)."""

  def __init__(self, directory: str, *, keep: int = 3, best_metric: str | None = "top1",
               best_mode: str = "max", async_save: bool = True):
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    if keep < 1:
      raise ValueError(f"keep must be >= 1, got {keep}")
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    key = _sort_key(best_mode)
    policies = [checkpoint_managers.LatestN(n=keep)]
    if best_metric:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=key, reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=key if best_metric else None, best_mode=best_mode,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})
    # Orbax removes a killed save's temp dirs in a background thread; let it finish before the
    # run reads anything, so no file-system call of the run races it (a mocked file system in
    # tests, a restore of the directory it is cleaning). No public API waits for it.
    getattr(self.manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The best step by ``best_metric`` (the latest when no metric is tracked)."""
    return self.manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def delete_after(self, step: int) -> list[int]:
    """Removes the checkpoints after ``step`` (to restart from it); returns their steps."""
    if step not in self.manager.all_steps():
      raise ValueError(f"train.resume_from_step={step}: no checkpoint of that step in "
                       f"{self.directory}; kept: {sorted(self.manager.all_steps())}")
    later = [s for s in self.manager.all_steps() if s > step]
    for s in later:
      self.manager.delete(s)
    return later

  def reached_preemption(self, step: int) -> bool:
    """True when the cluster signalled preemption (needs jax.distributed); save and stop then."""
    return self.manager.reached_preemption(step)

  def save(self, step: int, state: Any, *, meta: Mapping[str, Any] | None = None,
           metrics: Mapping[str, Any] | None = None) -> None:
    """Starts saving ``state`` at ``step`` (async); ``metrics`` rank it for "best" if it has one."""
    tracked = None
    if self.best_metric and metrics is not None:
      if self.best_metric not in metrics:
        raise KeyError(f"best_metric {self.best_metric!r} not among eval metrics {sorted(metrics)}")
      tracked = {"value": float(metrics[self.best_metric]), "step": int(step)}
    if step in self.manager.all_steps():
      raise FileExistsError(f"Checkpoint for step {step} exists in {self.directory}")
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta or {}))),
        metrics=tracked, force=True)

  def restore(self, step: int, abstract_state: Any, shardings: Any = None) -> tuple[Any, dict]:
    """Restores ``step`` onto ``shardings`` (default: the abstract leaves' own) with strict checks."""
    if shardings is not None:
      abstract_state = jax.tree.map(
          lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)
    self._check_fits(step, abstract_state)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"] or {})

  def _check_fits(self, step: int, abstract_state: Any) -> None:
    stored = self.manager.item_metadata(step)["state"]
    if stored is None:
      raise CheckpointMismatchError(f"Checkpoint {self.directory}/{step} has no 'state' item")
    flat = lambda tree: {path_str(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    flat_want, flat_have = flat(abstract_state), flat(stored)
    problems = [f"missing in checkpoint: {k}" for k in flat_want if k not in flat_have]
    problems += [f"unexpected in checkpoint: {k}" for k in flat_have if k not in flat_want]
    for k in flat_want.keys() & flat_have.keys():
      want, have = flat_want[k], flat_have[k]
      if tuple(want.shape) != tuple(have.shape) or want.dtype != have.dtype:
        problems.append(f"{k}: checkpoint {tuple(have.shape)} {have.dtype} vs "
                        f"state {tuple(want.shape)} {want.dtype}")
    if problems:
      shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
      raise CheckpointMismatchError(
          f"Checkpoint {self.directory}/{step} does not fit the train state (changed model, "
          f"freezing rules or optimizer? use a fresh workdir):\n  " + "\n  ".join(shown))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class EarlyStopping:
  """Stops after ``patience`` evaluations without a strict improvement of ``metric``.

  ``patience=0`` never stops. ``state()``/``from_state()`` round-trip through checkpoint meta, so a
  resumed run counts on where it stopped.
  """

  def __init__(self, metric: str, *, mode: str = "max", patience: int = 0):
    if mode not in ("max", "min"):
      raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    self.metric, self.mode, self.patience = metric, mode, patience
    self.best_value: float | None = None
    self.best_step: int | None = None
    self.bad_evals = 0

  def update(self, step: int, metrics: Mapping[str, Any]) -> bool:
    """Records an evaluation; returns True when this one is the best so far."""
    v = float(metrics[self.metric])
    better = not math.isnan(v) and (
        self.best_value is None
        or (v > self.best_value if self.mode == "max" else v < self.best_value))
    if better:
      self.best_value, self.best_step, self.bad_evals = v, step, 0
    else:
      self.bad_evals += 1
    return better

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.bad_evals >= self.patience

  def state(self) -> dict:
    return {"best_value": self.best_value, "best_step": self.best_step, "bad_evals": self.bad_evals}

  def load_state(self, state: Mapping[str, Any]) -> None:
    self.best_value = state.get("best_value")
    self.best_step = state.get("best_step")
    self.bad_evals = int(state.get("bad_evals", 0))


__all__ = ["CheckpointMismatchError", "Checkpointer", "EarlyStopping"]
