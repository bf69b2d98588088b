"""Layers shared by the model families.

    norm = BatchNormSpec(frozen=(r"^layer[12]/",), momentum=0.9, epsilon=1e-5)
    y = norm(self, "bn1", x, train)          # inside a compact module: an nn.BatchNorm named bn1

``BatchNormSpec`` is how every family builds its BatchNorms: its reference framework's constants,
which ones are frozen (running statistics even in training, so their ``batch_stats`` stay bitwise
unchanged) and, under ``pmap``, the axis to average batch statistics over.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def resolve_dtype(dtype: Any) -> Any:
  """A jnp dtype from itself or its name ('float32', 'bfloat16')."""
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f"Unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    return DTYPES[dtype]
  return dtype


@dataclasses.dataclass(frozen=True)
class BatchNormSpec:
  """How a model's BatchNorms are built.

  Attributes:
    frozen: regexes over the BatchNorm's '/'-joined module path (``layer2/0/bn1``); a frozen
      BatchNorm normalises with its running statistics even in training, so its ``batch_stats``
      stay bitwise unchanged and its backward pass does not depend on batch statistics.
    dtype: compute dtype (scale and bias stay float32).
    zero_init_last: the last BatchNorm of a residual block starts at zero scale.
    momentum, epsilon: flax's convention (torch's momentum 0.1 is flax's 0.9).
    axis_name: average batch statistics over this mapped axis (cross-replica BatchNorm under
      ``pmap``); None under ``jit``, where a BatchNorm already sees the global batch.
  """
  frozen: tuple[str, ...] = ()
  dtype: Any = jnp.float32
  zero_init_last: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: str | None = None

  def __call__(self, parent: nn.Module, name: str, x, train: bool, last: bool = False):
    path = "/".join((*parent.scope.path, name))
    frozen = any(re.search(p, path) for p in self.frozen)
    zero = last and self.zero_init_last
    return nn.BatchNorm(
        use_running_average=not train or frozen, momentum=self.momentum, epsilon=self.epsilon,
        dtype=self.dtype, param_dtype=jnp.float32, axis_name=None if frozen else self.axis_name,
        scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
        parent=parent, name=name)(x)


def linear_init(num_features: int):
  """torch.nn.Linear's default init, for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / float(num_features) ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def classifier_head(x, *, num_classes: int, dropout_rate: float, dtype: Any, train: bool):
  """``pre_logits`` → dropout (when > 0) → the Dense head ``fc`` (torch.nn.Linear's init),
  float32 logits. Call it inside a compact ``__call__``: ``fc`` belongs to that module."""
  if dropout_rate > 0:
    x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  init = linear_init(x.shape[-1])
  logits = nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32, kernel_init=init,
                    bias_init=init, name="fc")(x)
  return logits.astype(jnp.float32)


__all__ = ["BatchNormSpec", "DTYPES", "classifier_head", "linear_init", "resolve_dtype"]
