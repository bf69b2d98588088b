"""Max pooling's tap formulation (CPU) against reduce_window and its native gradient (jtransfer/cpu/pool.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtransfer.cpu import pool

# (input shape, window, strides, padding): the ResNet stem's pool, odd sizes, stride 1,
# non-overlapping windows, asymmetric padding.
GEOMETRIES = [
    ((2, 12, 12, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 11, 9, 4), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((1, 7, 7, 2), (3, 3), (1, 1), ((1, 1), (1, 1))),
    ((2, 8, 8, 3), (2, 2), (2, 2), ((0, 0), (0, 0))),
    ((1, 9, 10, 2), (3, 2), (2, 3), ((0, 1), (1, 0))),
]


def _native(x, window, strides, padding):
  return nn.max_pool(x, window, strides, padding=list(padding))


def _inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


@pytest.mark.parametrize("shape,window,strides,padding", GEOMETRIES)
def test_forward_and_gradient_equal_native(shape, window, strides, padding):
  x = _inputs(shape)
  y_ref, vjp_ref = jax.vjp(lambda x: _native(x, window, strides, padding), x)
  y, vjp = jax.vjp(lambda x: pool.max_pool(x, window, strides, padding, backend="cpu"), x)
  np.testing.assert_array_equal(y, y_ref)
  dy = _inputs(y.shape, seed=1)
  np.testing.assert_allclose(vjp(dy)[0], vjp_ref(dy)[0], rtol=0, atol=1e-6)


def test_ties_send_the_gradient_to_the_first_maximum():
  # Rounded ReLU outputs: many windows hold their maximum (0, 1 or 2) more than once. The whole
  # gradient must go to one of them, the first in window order, as XLA's select_and_scatter and
  # torch's indices do (not split among them).
  x = jnp.maximum(jnp.round(_inputs((2, 12, 12, 4))), 0.0)
  args = ((3, 3), (2, 2), ((1, 1), (1, 1)))
  y = _native(x, *args)
  dy = _inputs(y.shape, seed=2)
  ref = jax.vjp(lambda x: _native(x, *args), x)[1](dy)[0]
  got = jax.vjp(lambda x: pool.max_pool(x, *args, backend="cpu"), x)[1](dy)[0]
  ties = sum(int(jnp.sum(t == y)) for t in pool._taps(x, *args, y.shape[1:3])) - y.size
  assert ties > 50  # the case is exercised
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
  # Every output's gradient lands once: the total is conserved.
  np.testing.assert_allclose(jnp.sum(got), jnp.sum(dy), rtol=1e-5)


def test_tap_formulation_only_on_cpu_and_auto():
  x = jnp.zeros((1, 8, 8, 1))
  args = ((3, 3), (2, 2), ((1, 1), (1, 1)))

  def has_custom_vjp(**kw):
    return "custom_vjp_call" in str(jax.make_jaxpr(lambda x: pool.max_pool(x, *args, **kw))(x))
  assert has_custom_vjp(impl="auto", backend="cpu")
  assert not has_custom_vjp(impl="auto", backend="gpu")
  assert not has_custom_vjp(impl="xla", backend="cpu")
  with pytest.raises(ValueError, match="max-pool impl 'fast'"):
    pool.max_pool(x, *args, impl="fast")


def test_a_nan_propagates_as_through_reduce_window():
  x = _inputs((1, 8, 8, 2)).at[0, 3, 4, 1].set(jnp.nan).at[0, 0, 0, 0].set(jnp.nan)
  args = ((3, 3), (2, 2), ((1, 1), (1, 1)))
  y_ref = _native(x, *args)
  y = pool.max_pool(x, *args, backend="cpu")
  assert int(jnp.sum(jnp.isnan(y_ref))) == 3  # the case is exercised: 3 windows hold a NaN
  np.testing.assert_array_equal(jnp.isnan(y), jnp.isnan(y_ref))
  np.testing.assert_array_equal(y, y_ref)  # NaNs compare equal here

