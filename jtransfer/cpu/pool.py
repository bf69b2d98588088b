"""Max pooling written for XLA's CPU backend.

    y = pool.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)), impl="auto")

JAX differentiates ``lax.reduce_window``'s max as ``select_and_scatter_add``, which XLA's CPU
backend expands into a scatter with iota indices, ~20× the forward's time (the ResNet stem's 3×3/2
pool at 224 px, batch 32: 560-700 ms against the forward's 28 ms; docs/speed.md). With
``impl='auto'`` on the CPU the pool is written over its k² window taps (strided slices of the
-inf-padded input) instead. Forward: the elementwise maximum of the taps, one loop fusion, equal
to ``reduce_window``'s value (NaN included) and faster on the CPU (the stem's pool alone:
16 → 11 ms; forward and gradient inside the 224-px train step: 53 → 34 ms,
``scripts/profile_step.py``).
Gradient: for each tap in window order, the outputs whose first maximum sits at that tap take
``dy``, and the tap's share is put back in place with one interior-padded ``lax.pad``; the k²
shares are summed. The gradient goes to the first maximum of each window, as XLA's
``select_and_scatter`` (with its ``ge`` select) and torch's max-pool indices do; where windows
overlap, the shares are added in another order, so the result equals the native gradient within
float rounding (tests/test_pool.py). Saving the first maximum's tap index (int8) instead of the
input and output was tried: XLA fuses the index's chain of comparisons into each of the k² pads
(an optimization barrier does not survive XLA:CPU's passes; an ``argmax`` materialises the
stacked taps), and the step got slower.

``impl='xla'`` (and any backend but the CPU) keeps ``reduce_window`` and its native gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp

IMPLS = ("xla", "auto")


def _native(x, window, strides, padding):
  # A Python -inf, so that JAX sees a max monoid (differentiable) rather than a generic reducer.
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1),
                           (1, *strides, 1), ((0, 0), *padding, (0, 0)))


def _taps(x, window, strides, padding, out_hw):
  """The window taps of the -inf-padded input, in window order: [tap's (N, OH, OW, C) slice]."""
  xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), ((0, 0, 0), (*padding[0], 0), (*padding[1], 0),
                                                  (0, 0, 0)))
  (sh, sw), (oh, ow) = strides, out_hw
  return [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (oh - 1) + 1,
                                        j + sw * (ow - 1) + 1, xp.shape[3]), (1, sh, sw, 1))
          for i in range(window[0]) for j in range(window[1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _tap_pool(x, window, strides, padding):
  return _tap_max(x, window, strides, padding)


def _tap_max(x, window, strides, padding):
  """The pool's value as the maximum of its taps (``lax.max`` propagates a NaN, as the window's
  max does)."""
  oh, ow = ((n + lo + hi - k) // s + 1
            for n, k, s, (lo, hi) in zip(x.shape[1:3], window, strides, padding))
  return functools.reduce(lax.max, _taps(x, window, strides, padding, (oh, ow)))


def _fwd(x, window, strides, padding):
  y = _tap_max(x, window, strides, padding)
  return y, (x, y)


def _bwd(window, strides, padding, residuals, dy):
  x, y = residuals
  (pt, pb), (pl, pr) = padding
  hp, wp = x.shape[1] + pt + pb, x.shape[2] + pl + pr
  oh, ow = y.shape[1:3]
  zero = jnp.zeros((), dy.dtype)
  taken = jnp.zeros(y.shape, bool)
  dxp = None
  for k, tap in enumerate(_taps(x, window, strides, padding, (oh, ow))):
    first = (tap == y) & ~taken
    taken = taken | first
    i, j = divmod(k, window[1])
    share = lax.pad(jnp.where(first, dy, zero), zero,
                    ((0, 0, 0), (i, hp - i - strides[0] * (oh - 1) - 1, strides[0] - 1),
                     (j, wp - j - strides[1] * (ow - 1) - 1, strides[1] - 1), (0, 0, 0)))
    dxp = share if dxp is None else dxp + share
  return (dxp[:, pt:hp - pb, pl:wp - pr, :],)


_tap_pool.defvjp(_fwd, _bwd)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]], *, impl: str = "auto",
             backend: str | None = None) -> jax.Array:
  """2-D max pooling of an NHWC ``x`` (``padding``: explicit (lo, hi) pairs, padded with -inf).

  ``impl``: 'auto' uses the tap formulation on the CPU backend (``backend`` defaults to
  ``jax.default_backend()``), 'xla' the native one everywhere.
  """
  if impl not in IMPLS:
    raise ValueError(f"Unknown max-pool impl {impl!r}; known: {', '.join(IMPLS)}")
  window, strides = tuple(window), tuple(strides)
  padding = tuple(tuple(p) for p in padding)
  if impl == "auto" and (backend or jax.default_backend()) == "cpu":
    return _tap_pool(x, window, strides, padding)
  return _native(x, window, strides, padding)
