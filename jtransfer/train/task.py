"""The task seam: what differs between ways of training a model, above the one trainer.

    task = methods.task_for(config)                  # Task, Distill, SourceOnly or DANN
    source = task.source()                           # the input streams
    params = {**params, **task.init_extra(rng, model, variables, image_shape)}   # extra modules
    phases = task.phases(phases, params)             # extra freezing rules
    loss_fn = task.loss_fn(model, step=state.step, extra=extra, l2sp=..., trainable=mask)
    exported = task.export(variables)                # what leaves the run

``Task`` itself is plain supervised classification; a subclass overrides only what differs. The
trainer never names a task: adding a method (CORAL, MMD, ...) is one new file in
``jtransfer/methods/``, one line in ``methods.TASKS`` and its test. ``method_of`` says which
method a config names (``None``: plain supervised), so the trainer can refuse to run a config
that names one with the wrong task.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

from jtransfer.train import config as train_config
from jtransfer.train import inputs, losses


class Task:
  """Supervised classification on ``config.data``: cross-entropy (+ the configured penalties).

  Attributes:
    extra_params: top-level parameter subtrees the task adds to the model's (e.g. a domain
      classifier): freshly initialised, never loaded from pretrained weights, never exported.
  """
  extra_params: tuple[str, ...] = ()

  def __init__(self, config: Any):
    self.config = config

  def source(self) -> inputs.Source:
    """The trainer's input streams (train batches, eval batches, the dataset's info)."""
    return inputs.from_config(train_config.data_config(self.config))

  def init_extra(self, rng: jax.Array, model: Any, variables: Mapping[str, Any],
                 image_shape: tuple[int, ...]) -> dict:
    """Fresh parameters of the task's own modules, keyed by ``extra_params``."""
    del rng, model, variables, image_shape
    return {}

  def phases(self, phases: list, params: Any) -> list:
    """The freezing phases with whatever rules the task's own parameters need."""
    del params
    return phases

  def extra_inputs(self) -> dict:
    """Arrays every step receives (replicated), e.g. a teacher's variables."""
    return {}

  def program_key(self) -> Any:
    """What the task adds to its train step's program beyond the run's config (hashable).

    The config is already part of the key (``train.programs``); a task whose loss depends on
    anything else (a teacher read from a file) adds it here.
    """
    return type(self).__qualname__

  def loss_fn(self, model: Any, *, step: jax.Array, extra: Mapping[str, Any],
              l2sp: Callable | None, trainable: Any) -> Callable:
    """``loss_fn(params, batch_stats, batch, rng)`` for ``train.step.make_train_step``.

    Built inside the compiled step, so ``step`` (the state's step counter) may drive schedules.
    """
    del step, extra
    return losses.make_loss_fn(model, self.config.loss, l2sp=l2sp, trainable=trainable)

  def export(self, variables: Mapping[str, Any]) -> dict:
    """``variables`` without the task's training-only subtrees: a plain classifier."""
    return {col: ({k: v for k, v in tree.items() if k not in self.extra_params}
                  if isinstance(tree, Mapping) else tree)
            for col, tree in variables.items()}


def method_of(config: Any) -> str | None:
  """The training method ``config`` names (a key of ``methods.TASKS``), ``None`` for supervised."""
  if config.adapt.method:
    return str(config.adapt.method)
  if config.loss.distill.teacher:
    return "distill"
  return None


__all__ = ["Task", "method_of"]
