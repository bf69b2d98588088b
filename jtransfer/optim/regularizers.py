"""Penalties added to the loss: L2-SP toward the pretrained weights, and plain L2 / L1.

    loss = ce + optim.l2sp_penalty(params, pretrained_params, alpha=0.01, beta_head=0.01,
                                   head_pattern=r"^fc/")

L2-SP (Li et al., 2018): ``alpha/2 · ||w − w⁰||²`` over the transferred parameters, and
``beta_head/2 · ||w_head||²`` over the new head, which has no pretrained value to return to.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from jtransfer.optim.config import KERNELS_ONLY
from jtransfer.optim.rules import path_str


def _sq(x):
  return jnp.sum(jnp.square(x.astype(jnp.float32)))


def l2sp_penalty(params, anchor_params, *, alpha: float, beta_head: float,
                 head_pattern: str) -> jax.Array:
  """L2-SP: non-head parameters toward ``anchor_params`` (same paths), head toward zero.

  ``head_pattern``: the new head's regex (``optim.head_pattern(config)``: the model family's).

  Raises ValueError when a non-head parameter has no anchor of the same shape.
  """
  anchors = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(anchor_params)[0]}
  to_anchor, to_zero = [], []
  for keypath, w in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = path_str(keypath)
    if re.search(head_pattern, path):
      to_zero.append(_sq(w))
      continue
    w0 = anchors.get(path)
    if w0 is None or jnp.shape(w0) != jnp.shape(w):
      raise ValueError(f"L2-SP: no anchor of shape {jnp.shape(w)} for {path!r}")
    to_anchor.append(_sq(w - jax.lax.stop_gradient(w0)))
  total = lambda xs: sum(xs) if xs else jnp.zeros((), jnp.float32)
  return 0.5 * alpha * total(to_anchor) + 0.5 * beta_head * total(to_zero)


def l2_penalty(params, *, coeff: float, pattern: str = KERNELS_ONLY) -> jax.Array:
  """``coeff/2 · Σ ||w||²`` over the parameters whose path matches ``pattern``."""
  terms = [_sq(w) for p, w in jax.tree_util.tree_flatten_with_path(params)[0]
           if re.search(pattern, path_str(p))]
  return 0.5 * coeff * sum(terms) if terms else jnp.zeros((), jnp.float32)


def l1_penalty(params, *, coeff: float, pattern: str = KERNELS_ONLY) -> jax.Array:
  """``coeff · Σ |w|`` over the parameters whose path matches ``pattern``."""
  terms = [jnp.sum(jnp.abs(w.astype(jnp.float32)))
           for p, w in jax.tree_util.tree_flatten_with_path(params)[0]
           if re.search(pattern, path_str(p))]
  return coeff * sum(terms) if terms else jnp.zeros((), jnp.float32)
