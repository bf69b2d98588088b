"""Gradient reversal (Ganin & Lempitsky 2015): identity forward, −λ·gradient backward.

    feats = gradient_reversal(features["pre_logits"], lam)
    domain_logits = DomainHead()(feats)
    lam = dann_lambda(step / total_steps)    # 2 / (1 + exp(−10 p)) − 1
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x, lam):
  """Returns ``x``; its cotangent is multiplied by ``-lam`` (``lam`` gets no gradient)."""
  return x


def _fwd(x, lam):
  return x, lam


def _bwd(lam, g):
  return (jax.tree.map(lambda t: -lam * t, g), jnp.zeros_like(lam))


gradient_reversal.defvjp(_fwd, _bwd)


def dann_lambda(progress, *, gamma: float = 10.0):
  """The paper's schedule over training progress ``p`` in [0, 1]: 2/(1+exp(−γp)) − 1."""
  return 2.0 / (1.0 + jnp.exp(-gamma * jnp.asarray(progress, jnp.float32))) - 1.0


class DomainHead(nn.Module):
  """The domain classifier: an MLP from features to source/target logits (the paper's 1024-1024-2,
  here configurable)."""
  hidden: tuple[int, ...] = (256,)

  @nn.compact
  def __call__(self, x):
    for i, h in enumerate(self.hidden):
      x = nn.relu(nn.Dense(h, name=f"hidden{i}")(x))
    return nn.Dense(1, name="out")(x)[..., 0]
