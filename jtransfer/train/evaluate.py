"""Evaluation over the whole eval split: every example once, the padded tail masked out.

    eval_step = evaluate.make_eval_step(model, par)
    m = evaluate.evaluate(eval_step, variables, source, par)
    m["top1"], m["macro_f1"], m["auc_roc"], m["confusion_matrix"]

The model runs in inference mode under ``par`` (jit over the mesh, or pmap), each process feeding
its own part of every batch; the logits of all processes come back to every process, and the
metrics (``metrics.classification_metrics``) are computed on the host from them.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from jtransfer.train import metrics as metrics_lib


def make_eval_step(model: Any, par: Any) -> Callable:
  """``(variables, batch) -> {'logits', 'label', 'mask'}`` for the whole global batch."""
  def step(variables, batch):
    logits, _ = model.apply(variables, batch["image"], train=False)
    return {"logits": logits, "label": batch["label"], "mask": batch["mask"].astype(np.float32)}
  return par.compile_eval(step)


def predict(eval_step: Callable, variables: Any, source: Any, par: Any,
            process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
  """Logits, labels and mask of the whole eval split (padding included), on every process."""
  outs = []
  for local in source.eval_iterator(process_index=process_index, process_count=process_count):
    local = {k: np.asarray(local[k]) for k in ("image", "label", "mask")}
    outs.append(par.fetch(eval_step(variables, par.put_batch(local))))
  if not outs:
    raise ValueError("The eval split is empty")
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def evaluate(eval_step: Callable, variables: Any, source: Any, par: Any, *,
             process_index: int = 0, process_count: int = 1) -> dict:
  """All metrics of ``metrics.classification_metrics`` on the eval split."""
  out = predict(eval_step, variables, source, par, process_index, process_count)
  result = metrics_lib.classification_metrics(out["logits"], out["label"], out["mask"])
  expected = getattr(getattr(source, "info", None), "num_eval", None)
  if expected is not None and result["num_examples"] != expected:
    raise RuntimeError(f"Evaluated {result['num_examples']} examples, the eval split has {expected}")
  return result


__all__ = ["evaluate", "make_eval_step", "predict"]
