"""Gradient reversal: identity forward, exactly −λ times the plain gradient backward."""

import jax
import jax.numpy as jnp
import numpy as np

from jtransfer.methods.adapt.grl import dann_lambda, gradient_reversal


def test_forward_is_identity():
  x = jnp.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(gradient_reversal(x, 0.7), x)


def test_gradient_is_exactly_minus_lambda_times_plain():
  x = jax.random.normal(jax.random.key(0), (4, 5))
  w = jax.random.normal(jax.random.key(1), (5, 3))
  f = lambda x: jnp.sum(jnp.tanh(x @ w) ** 2)
  plain = jax.grad(f)(x)
  for lam in (0.0, 0.25, 1.0, 3.0):
    rev = jax.grad(lambda x: f(gradient_reversal(x, lam)))(x)
    np.testing.assert_array_equal(rev, -lam * plain)


def test_works_under_jit_with_traced_lambda():
  x = jnp.ones((3,))
  g = jax.jit(jax.grad(lambda x, lam: jnp.sum(gradient_reversal(x, lam) * 2.0)))(x, 0.5)
  np.testing.assert_array_equal(g, -1.0 * jnp.ones(3))


def test_schedule_endpoints():
  np.testing.assert_allclose(dann_lambda(0.0), 0.0)
  np.testing.assert_allclose(dann_lambda(1.0), 2 / (1 + np.exp(-10)) - 1, rtol=1e-6)
  assert 0.4 < float(dann_lambda(0.1)) < 0.5
