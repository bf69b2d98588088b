"""The gradient reversal layer and DANN's schedule for its strength (Ganin & Lempitsky 2015).

    from jtransfer.methods.adapt import grl
    y = grl.gradient_reversal(x, lam)                 # y == x; dL/dx = -lam * dL/dy
    lam = grl.lambda_at(step, total_steps, "paper")   # 2/(1+exp(-10 p)) - 1
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x, lam):
  """Returns ``x``; its cotangent is multiplied by ``-lam`` (``lam`` gets no gradient)."""
  return x


def _grl_fwd(x, lam):
  return x, lam


def _grl_bwd(lam, g):
  return (jax.tree.map(lambda t: -lam * t, g), jnp.zeros_like(lam))


gradient_reversal.defvjp(_grl_fwd, _grl_bwd)


def dann_lambda(progress, *, gamma: float = 10.0):
  """The paper's schedule over training progress ``p`` in [0, 1]: 2/(1+exp(−γp)) − 1."""
  return 2.0 / (1.0 + jnp.exp(-gamma * jnp.asarray(progress, jnp.float32))) - 1.0


def lambda_at(step, total_steps: int, lam: str | float, *, gamma: float = 10.0):
  """λ at ``step`` (a traced or concrete number): 'paper' or a constant."""
  if lam == "paper":
    progress = jnp.minimum(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 1.0)
    return dann_lambda(progress, gamma=gamma)
  return jnp.asarray(float(lam), jnp.float32)


__all__ = ["dann_lambda", "gradient_reversal", "lambda_at"]
