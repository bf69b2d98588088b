"""Knowledge distillation (Hinton et al. 2015): a student learns from a teacher's soft labels.

    config.loss.distill.teacher = "workdirs/teacher/export"   # any run's export (model.json beside)
    task = Distill(config)                                    # chosen by methods.task_for

The loss is α·CE + (1−α)·T²·KL(teacher_T ‖ student_T) (``train.losses.distillation_loss``); the
teacher runs in inference mode under ``stop_gradient``, so its forward is never differentiated.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax

from jtransfer import models, weights
from jtransfer.train import losses, programs
from jtransfer.train.task import Task


def load_teacher(distill_cfg: Any, dtype: str) -> tuple[Any, dict]:
  """The teacher ``(model, variables)`` of ``config.loss.distill``.

  The module is rebuilt from the ``model.json`` every export writes; a weights file without one
  (a converted torchvision file) needs ``distill.arch`` and uses that family's default options.
  """
  path = distill_cfg.teacher
  meta = models.read_meta(path) if path and not path.endswith((".pth", ".pt", ".safetensors")) else None
  if meta is None:
    if not distill_cfg.arch:
      raise ValueError(f"Teacher {path}: set loss.distill.arch (no {models.MODEL_JSON} beside "
                       "the weights)")
    meta = {"arch": distill_cfg.arch, "options": {}}
  arch = distill_cfg.arch or meta["arch"]
  variables = weights.load(path, arch=arch)
  head = variables["params"].get("fc")
  if head is None:
    raise ValueError(f"Teacher {path} has no classification head 'fc'")
  model = models.from_meta({**meta, "arch": arch}, dtype=dtype,
                           num_classes=int(head["bias"].shape[-1]))
  return model, variables


class Distill(Task):
  """Supervised training with a teacher's soft labels in the loss."""

  def __init__(self, config: Any):
    super().__init__(config)
    self.teacher_model, self.teacher_variables = load_teacher(config.loss.distill,
                                                              config.model.dtype)

  def extra_inputs(self) -> dict:
    return {"teacher": self.teacher_variables}

  def program_key(self):
    # The teacher's module (arch and options, from its model.json) and its variables' shapes;
    # the values travel in ``extra``, and the path is a run-only field.
    return (super().program_key(), self.teacher_model,
            programs.shapes_key(self.teacher_variables))

  def loss_fn(self, model: Any, *, step: jax.Array, extra: Mapping[str, Any],
              l2sp: Callable | None, trainable: Any) -> Callable:
    del step
    return losses.make_loss_fn(model, self.config.loss,
                               teacher=(self.teacher_model, extra["teacher"]), l2sp=l2sp,
                               trainable=trainable)


__all__ = ["Distill", "load_teacher"]
