"""WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022): weight-space
ensembles of a start model and its fine-tuned version.

    from jtransfer.methods import wise_ft
    mixed = wise_ft.interpolate(start, finetuned, 0.5)
    logits, _ = model.apply(mixed, images, train=False)

θ(α) = (1 - α)·θ0 + α·θ1 for every leaf of the variables (Wortsman et al., "Robust fine-tuning of
zero-shot models", CVPR 2022): α = 0 is the start model, α = 1 the fine-tuned one, and values in
between often beat both out of distribution at little cost in distribution.

BatchNorm statistics ('batch_stats': running mean and variance) are interpolated with the same α
as the parameters. Weight-space ensembling means mixing the *whole* state that defines the
function; the statistics are part of it (they are the normalisation the weights were trained
with), and keeping either end's statistics would pair one model's weights with the other's
activation scales. A convex combination of two positive variances stays positive, which is why α
is restricted to [0, 1] (extrapolating could make a running variance negative).

Strict: both trees must have the same leaves with the same shapes, and the error names the first
leaf that differs. The one allowed difference is a leaf that only the fine-tuned tree has (a new
head on a backbone whose pretraining head was dropped): its θ0 is taken from ``head_init``
(e.g. the fine-tuned model's initialisation, or a linear-probe head); without it, an error.
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping

from flax import traverse_util
import jax.numpy as jnp
import numpy as np

__all__ = ["interpolate"]


def _flat(tree: Mapping) -> dict[str, Any]:
  """Nested dicts (or FrozenDicts) -> {'params/layer1/0/conv1/kernel': leaf}, in the tree's order."""
  return traverse_util.flatten_dict(tree, sep="/")


def _check_alpha(alpha) -> float:
  if (not isinstance(alpha, numbers.Real) or isinstance(alpha, bool)
      or not 0.0 <= float(alpha) <= 1.0):
    raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
  return float(alpha)


def _check_float(path: str, leaf: Any, which: str) -> None:
  if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
    raise TypeError(f"{path}: {which} leaf has dtype {jnp.result_type(leaf)}; only floating-point "
                    "leaves can be interpolated")


def interpolate(start_variables: Mapping, finetuned_variables: Mapping, alpha: float, *,
                head_init: Mapping | None = None) -> dict[str, Any]:
  """(1 - alpha)·start + alpha·finetuned, leaf by leaf, over every collection (params, batch_stats).

  Returns plain nested dicts in the fine-tuned tree's layout, each leaf in the fine-tuned leaf's
  dtype (computed in float32, or float64 for float64 leaves, by NumPy on the host). alpha = 0 and
  alpha = 1 return the start and fine-tuned leaves bitwise. Raises ValueError naming the first
  leaf path ('params/fc/kernel') that is missing, extra or mis-shaped; a leaf only in the
  fine-tuned tree takes its start value from ``head_init`` (same path and shape), else it is an
  error too.
  """
  alpha = _check_alpha(alpha)
  start, tuned = _flat(start_variables), _flat(finetuned_variables)
  extra = [p for p in start if p not in tuned]
  if extra:
    raise ValueError(f"{extra[0]}: in the start variables but not in the fine-tuned ones "
                     f"({len(extra)} such leaves)")
  heads = _flat(head_init) if head_init is not None else {}
  out = {}
  for path, theta1 in tuned.items():
    if path in start:
      theta0, source = start[path], "start"
    elif path in heads:
      theta0, source = heads[path], "head_init"
    elif head_init is None:
      raise ValueError(f"{path}: only in the fine-tuned variables (a new head?); pass head_init= "
                       "variables to take its start value from")
    else:
      raise ValueError(f"{path}: only in the fine-tuned variables, and head_init lacks it too")
    if np.shape(theta0) != np.shape(theta1):
      raise ValueError(f"{path}: shape {tuple(np.shape(theta0))} in {source} but "
                       f"{tuple(np.shape(theta1))} in the fine-tuned variables")
    _check_float(path, theta0, source)
    _check_float(path, theta1, "fine-tuned")
    dtype = jnp.result_type(theta1)
    if alpha == 0.0:
      # Exact endpoints: (1 - 0)·θ0 + 0·θ1 would turn an inf/nan in θ1 into nan.
      out[path] = jnp.asarray(theta0, dtype)
    elif alpha == 1.0:
      out[path] = jnp.asarray(theta1, dtype)
    else:
      # On the host, in NumPy: eager jnp ops would compile ~4 programs per distinct leaf shape
      # (~100 for EfficientNet-Lite0, 4 s on 2 cores), for a few million multiply-adds.
      compute = np.float64 if dtype == jnp.float64 else np.float32
      mixed = ((1.0 - alpha) * np.asarray(theta0, compute)
               + alpha * np.asarray(theta1, compute))
      out[path] = jnp.asarray(mixed.astype(dtype))
  return traverse_util.unflatten_dict(out, sep="/")
