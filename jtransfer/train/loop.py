"""The train loop: one step, then a list of periodic actions given the step and the time.

    ls = loop.LoopState(state=state, last_step=start)
    actions = [loop.LogTrain(ls, ...), loop.Evaluate(ls, ...), loop.Checkpoint(ls, ...),
               loop.Preemption(ls, ...), periodic_actions.ReportProgress(num_train_steps=1000)]
    ls = loop.run(ls, step_fn, batches, start=start, num_steps=1000, actions=actions,
                  clock=time.monotonic)       # ls.state, ls.last_step, ls.stop

``run`` is a function and the actions are CLU ``PeriodicAction``s (``_should_trigger`` /
``_apply``, the step and the time passed in, so tests need no sleeps); progress reports are CLU's
own ``ReportProgress``, appended by the trainer. The actions of this module share one
``LoopState``: the current train state, the train metrics not yet logged, this step's eval metrics,
whether to stop and the last step run. Order matters and is the list's: metrics are checked for
NaN before an evaluation, which comes before the checkpoint that records it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator

from absl import logging
from clu import periodic_actions
import numpy as np


class NonFiniteLossError(FloatingPointError):
  """The loss (or gradient norm) became NaN or inf at ``step``; the message names it."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


@dataclasses.dataclass
class LoopState:
  """What the actions of one step read and write."""
  state: Any = None
  pending: list = dataclasses.field(default_factory=list)  # [(step, device metrics)]
  eval_metrics: dict | None = None
  stop: str = ""       # why the loop stops early ('' = it does not)
  last_step: int = 0


def _every(n: int | None) -> int | None:
  return n if n and n > 0 else None


def steps_every(n: int, num_steps: int) -> set[int]:
  """The steps ``n, 2n, ... <= num_steps`` (none for n = 0)."""
  return set(range(n, num_steps + 1, n)) if n and n > 0 else set()


class Action(periodic_actions.PeriodicAction):
  """A periodic action over the shared ``LoopState``; also fires on the last step, never on the
  step the loop (re)starts from."""

  def __init__(self, loop_state: LoopState, *, every_steps: int | None, num_steps: int,
               on_steps: Iterable[int] = ()):
    super().__init__(every_steps=_every(every_steps), on_steps={num_steps, *on_steps})
    self.ls = loop_state

  def _should_trigger(self, step: int, t: float) -> bool:
    return step != self._previous_step and super()._should_trigger(step, t)


def summarize(pending: list[tuple[int, dict]]) -> dict:
  """Means of the per-step train metrics; raises NonFiniteLossError at the first bad step."""
  for step, m in pending:
    for key in ("loss", "grad_norm", "param_norm"):
      if key in m and not np.isfinite(m[key]):
        raise NonFiniteLossError(
            f"Non-finite {key} ({m[key]}) at step {step}: stopping; no checkpoint after step "
            f"{step - 1} is written.", step)
  keys = pending[-1][1].keys()
  return {f"train/{k}": float(np.mean([m[k] for _, m in pending])) for k in keys}


class LogTrain(Action):
  """Checks and writes the mean train metrics since the last write, with img/s."""

  def __init__(self, loop_state, *, every_steps, num_steps, on_steps, fetch: Callable,
               writer: Any, batch_size: int):
    super().__init__(loop_state, every_steps=every_steps, num_steps=num_steps, on_steps=on_steps)
    self.fetch, self.writer, self.batch_size = fetch, writer, batch_size
    self.img_per_s = float("nan")

  def _apply(self, step: int, t: float):
    train = summarize([(s, self.fetch(m)) for s, m in self.ls.pending])  # raises on NaN / inf
    self.ls.pending = []
    if t > self._previous_time and step > self._previous_step:
      self.img_per_s = (step - self._previous_step) * self.batch_size / (t - self._previous_time)
    train["train/img_per_s"] = self.img_per_s
    self.writer.write(step, train)


class Evaluate(Action):
  """Runs every evaluator on the current variables; the first one's metrics drive best/early stop.

  ``evaluators``: ``{name: fn(state) -> metrics}``; the first is the run's own eval split, written
  as ``eval/<metric>``, the others as ``eval/<name>/<metric>``.
  """

  def __init__(self, loop_state, *, every_steps, num_steps, evaluators: dict, writer: Any,
               early_stopping: Any):
    super().__init__(loop_state, every_steps=every_steps, num_steps=num_steps)
    self.evaluators, self.writer, self.early = evaluators, writer, early_stopping

  def _apply(self, step: int, t: float):
    results = {name: fn(self.ls.state) for name, fn in self.evaluators.items()}
    main, *others = results
    self.ls.eval_metrics = results[main]
    record = {f"eval/{k}": v for k, v in results[main].items()}
    for name in others:
      record.update({f"eval/{name}/{k}": v for k, v in results[name].items()})
    self.writer.write(step, record)
    logging.info("Step %d eval: %s", step, {k: round(v, 4) for k, v in results[main].items()
                                            if np.ndim(v) == 0})
    self.early.update(step, results[main])
    if self.early.should_stop:
      self.ls.stop = (f"no {self.early.metric} improvement in {self.early.patience} evaluations "
                      f"(best {self.early.best_value} at step {self.early.best_step})")


class Checkpoint(Action):
  """Saves the state (async) with the loop's bookkeeping; the eval metrics rank it for 'best'."""

  def __init__(self, loop_state, *, every_steps, num_steps, on_steps, save: Callable):
    super().__init__(loop_state, every_steps=every_steps, num_steps=num_steps, on_steps=on_steps)
    self.save = save

  def _should_trigger(self, step: int, t: float) -> bool:
    evaluated = self.ls.eval_metrics is not None
    return super()._should_trigger(step, t) or (
        step != self._previous_step and (evaluated or bool(self.ls.stop)))

  def _apply(self, step: int, t: float):
    self.save(step, self.ls.state, self.ls.eval_metrics, stopped=bool(self.ls.stop))


class Preemption(Action):
  """Stops (after a checkpoint) when the cluster signals preemption."""

  def __init__(self, loop_state, *, reached: Callable[[int], bool], save: Callable):
    super().__init__(loop_state, every_steps=None, num_steps=-1)
    self.reached, self.save = reached, save

  def _should_trigger(self, step: int, t: float) -> bool:
    return step != self._previous_step and self.reached(step)

  def _apply(self, step: int, t: float):
    self.save(step, self.ls.state, self.ls.eval_metrics, stopped=False)
    self.ls.stop = "preempted"


def run(loop_state: LoopState, step_fn: Callable, batches: Iterator, *, start: int,
        num_steps: int, actions: list, clock: Callable[[], float],
        on_step: Callable[[int], None] = lambda step: None) -> LoopState:
  """Steps ``start+1 .. num_steps``; after each, every action in order; stops when one says so.

  ``step_fn(state, batch) -> (state, metrics)``; ``on_step(step)`` runs before each step (phase
  switches). Returns the loop state (its ``last_step`` is the last step run).
  """
  now = clock()
  for action in actions:
    action(start, now)  # the first call never triggers: it starts the action's clock
  for step in range(start + 1, num_steps + 1):
    on_step(step)
    loop_state.state, metrics = step_fn(loop_state.state, next(batches))
    loop_state.pending.append((step, metrics))
    loop_state.eval_metrics = None
    loop_state.last_step = step
    now = clock()
    for action in actions:
      action(step, now)
    if loop_state.stop:
      break
  return loop_state


__all__ = ["Action", "Checkpoint", "Evaluate", "LogTrain", "LoopState", "NonFiniteLossError",
           "Preemption", "run", "steps_every", "summarize"]
