"""A linen ``Conv`` whose forward pass and two gradients each pick XLA's convolution, a matmul or
oneDNN's kernels.

    from jtransfer.cpu.conv import Conv, conv_impl_rule
    conv = Conv(512, (3, 3), (1, 1), padding=[(1, 1), (1, 1)], use_bias=False, impl="auto")
    variables = conv.init(jax.random.key(0), x)        # {"params": {"kernel": HWIO}}, as nn.Conv
    y = conv.apply(variables, x)
    conv_impl_rule(x.shape, (3, 3, 512, 512), strides=(1, 1), padding=[(1, 1), (1, 1)])
    # ConvPlan(forward='matmul', input_grad='matmul', weight_grad='xla') for x of [128, 1, 1, 512]
    # ConvPlan(forward='onednn', input_grad='onednn', weight_grad='xla') with the oneDNN extension

``Conv`` takes the subset of ``nn.Conv`` the models use (2-D NHWC inputs, HWIO kernel, explicit
padding, groups, bias, inits, dtypes) and creates exactly ``nn.Conv``'s parameters, so converted
weights and checkpoints do not change. ``impl`` chooses how it computes:

* ``'xla'``: ``lax.conv_general_dilated``, exactly ``nn.Conv`` (the default).
* ``'matmul'``: patches as matmul in all three directions (pad, k² strided slices, one
  concatenate, one ``dot``); grouped convolutions stay on XLA.
* ``'onednn'``: oneDNN's forward / backward-data / backward-weights primitives, called inside
  XLA through the optional FFI extension (``jtransfer.cpu.onednn``); float32, CPU; a ``Conv``
  uses it for ungrouped convolutions, an explicit ``ConvPlan`` also for grouped ones (Lite0's
  depthwise convolutions).
* ``'auto'``: on the CPU backend, ``conv_impl_rule`` per direction; on GPU/TPU, ``'xla'``.

Why (jaxlib 0.10 on a 2-core AMD EPYC, measured by ``scripts/bench_vs_torch.py --convs``):

* XLA:CPU's convolution is 10-100× slower than the same product as a matmul when the image it
  convolves is at most 2×2 pixels: ResNet's layer3/layer4 at 32 px with the ImageNet stem. For the
  forward pass that image is the input; for the input gradient (a convolution of the output
  gradient) it is the output. Anywhere else XLA's forward and input gradient are as fast or up to
  5× faster than the patches matmul, whose k²-times larger patches are memory-bound.
* XLA's weight gradient of a 1×1 convolution is 1.1-2.4× (stride 1) and 2-4.5× (stride 2)
  slower than ``xᵀ·dy`` as one dot; for larger kernels XLA's is the faster one.

Without the oneDNN extension 'auto' flips exactly those cases; everything else stays XLA's.
With it, oneDNN's kernels beat XLA's in nearly every 3×3/7×7 direction (``conv_impl_rule`` says
where; docs/speed.md has the figures).

A non-XLA plan runs through a ``jax.custom_vjp`` that keeps only the input and the kernel for the
backward pass (not the k²-times larger patches, which the weight gradient rebuilds when it needs
them). ``jax.jvp`` (forward mode) is therefore unavailable for such a convolution; ``jax.grad``,
``jit``, ``vmap`` and ``pmap`` work.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
from flax.linen import dtypes
import jax
from jax import lax
import jax.numpy as jnp

from jtransfer.cpu import onednn

IMPLS = ("xla", "matmul", "onednn", "auto")
# What one direction of a ConvPlan can be.
FORMULATIONS = ("xla", "matmul", "onednn")
# NHWC activations, HWIO kernels: nn.Conv's layout, so the 'xla' path is its very HLO.
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Largest image side (pixels) XLA:CPU's convolution handles poorly: on 2×2 and 1×1 images it ran
# up to 50× slower than the patches matmul (forward, and the input gradient, which convolves the
# output gradient); on 3×3 images the two were within ±2.5× either way, and from 4×4 up XLA won
# by 1.5-10×.
SMALL_MAP = 2
# ...and only with enough work to be slow: below pixels × in-channels × out-channels = 8192 (e.g.
# a 1×1 image with 64 → 64 channels) both took under 2 ms at batch 128, either one ahead.
MIN_WORK = 8192

# 1×1 weight gradients on oneDNN from this output image size up (7×7 and larger won 1.2-2× over
# the dot; 4×4 and smaller lost 1.1-1.8×).
ONEDNN_MIN_1X1 = 7

Padding = Sequence[tuple[int, int]]


class ConvPlan(NamedTuple):
  """How each direction of one convolution is computed: 'xla', 'matmul' or 'onednn'."""
  forward: str
  input_grad: str
  weight_grad: str


XLA = ConvPlan("xla", "xla", "xla")
MATMUL = ConvPlan("matmul", "matmul", "matmul")
ONEDNN = ConvPlan("onednn", "onednn", "onednn")


def _pairs(padding: Any, kernel_hw: Sequence[int], strides: Sequence[int],
           in_hw: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """Explicit ((lo, hi), (lo, hi)) padding from pairs, an int, or 'SAME'/'VALID' (as nn.Conv)."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * 2
  pairs = tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)
  if len(pairs) != 2:
    raise ValueError(f"Conv pads 2 spatial dimensions; got padding {padding!r}")
  return pairs


def _out_hw(in_hw, kernel_hw, strides, padding) -> tuple[int, int]:
  return tuple((i + lo + hi - k) // s + 1
               for i, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, padding))


def live_taps(in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
              padding: Padding) -> tuple[tuple[tuple[int, int], ...], Padding] | None:
  """The kernel rows and columns that ever touch the image, as ((row lo, hi), (col lo, hi))
  half-open ranges, and the padding that goes with them, when some rows or columns touch only
  padding (a 3×3 kernel on a 1×1 image:
  only its centre); else None. Dropping the others, with the padding shrunk to match, is the
  same convolution (``conv`` with 'auto' does, on the CPU): those taps multiply zeros."""
  ranges, pads = [], []
  for n, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, padding):
    out = (n + lo + hi - k) // s + 1
    live = [i for i in range(k) if any(0 <= o * s + i - lo < n for o in range(out))]
    if not live:
      return None
    a, b = live[0], live[-1] + 1
    new_lo = lo - a
    new_hi = (out - 1) * s + (b - a) - n - new_lo
    if new_lo < 0 or new_hi < 0:
      return None
    ranges.append((a, b))
    pads.append((new_lo, new_hi))
  if all((a, b) == (0, k) for (a, b), k in zip(ranges, kernel_hw)):
    return None
  return tuple(ranges), tuple(pads)


def onednn_in_use(dtype: Any = jnp.float32) -> bool:
  """Whether 'auto' uses the oneDNN extension: built and loaded, ``dtype`` float32, and one device
  in the process (XLA cannot partition a custom call over a mesh; it would gather its operands).
  ``JTRANSFER_ONEDNN=0`` turns it off."""
  return (os.environ.get("JTRANSFER_ONEDNN", "1") != "0" and onednn.supports(dtype)
          and jax.process_count() == 1 and jax.local_device_count() == 1 and onednn.available())


def conv_impl_rule(input_shape: Sequence[int], kernel_shape: Sequence[int], *,
                   strides: Sequence[int] = (1, 1), padding: Any = ((0, 0), (0, 0)),
                   feature_group_count: int = 1, impl: str = "auto",
                   backend: str | None = None, dtype: Any = jnp.float32) -> ConvPlan:
  """The ``ConvPlan`` a ``Conv`` with ``impl`` uses for an NHWC input and an HWIO kernel.

  'auto' on the CPU backend (``backend`` defaults to ``jax.default_backend()``), for an ungrouped
  convolution, when the oneDNN extension is not in use:

  * 1×1 kernel: the weight gradient as one dot (``xᵀ·dy``, strided slice first), the rest XLA;
  * larger kernels: the forward pass as matmul when the input image is at most
    ``SMALL_MAP``×``SMALL_MAP`` pixels and its pixels × in-channels × out-channels is at least
    ``MIN_WORK``; the input gradient as matmul when the same holds for the output image (the
    input gradient is a convolution of the output gradient); the weight gradient on XLA (within
    ±1.5× of the matmul on small images, up to 3× faster on large ones).

  With the oneDNN extension in use ('auto', float32, built and loaded, and the process holding
  one device; see ``jtransfer.cpu.onednn``), measured at 224 and 32 px:

  * larger kernels: forward and input gradient on oneDNN (0.9-3× XLA's time, 0.3-0.6× the
    matmul's on tiny maps); the weight gradient on oneDNN unless the output image is at most
    ``SMALL_MAP``×``SMALL_MAP`` (there XLA's was 1.3-2.4× faster);
  * 1×1 kernel: forward and input gradient on XLA; the weight gradient on oneDNN when the
    output image is at least ``ONEDNN_MIN_1X1``² pixels (2-8× faster than XLA, 1.2-2× than the
    dot), else the dot.

  Every grouped convolution, and every backend but the CPU: XLA.
  """
  if impl not in IMPLS:
    raise ValueError(f"Unknown conv impl {impl!r}; known: {', '.join(IMPLS)}")
  if impl == "xla" or feature_group_count != 1:
    return XLA
  if impl == "matmul":
    return MATMUL
  if impl == "onednn":
    if (backend or jax.default_backend()) != "cpu":
      raise ValueError(f"conv impl 'onednn' runs on the CPU; the backend is "
                       f"{backend or jax.default_backend()!r} (use 'auto' or 'xla')")
    # float32 only; other dtypes (and grouped convolutions, above) stay on XLA.
    return ONEDNN if onednn.supports(dtype) else XLA
  if (backend or jax.default_backend()) != "cpu":
    return XLA
  kh, kw, cin, cout = kernel_shape
  in_hw = tuple(input_shape[1:3])
  pads = _pairs(padding, (kh, kw), tuple(strides), in_hw)
  out_hw = _out_hw(in_hw, (kh, kw), strides, pads)
  if onednn_in_use(dtype):
    if (kh, kw) == (1, 1):
      big = out_hw[0] * out_hw[1] >= ONEDNN_MIN_1X1 ** 2
      return ConvPlan("xla", "xla", "onednn" if big else "matmul")
    return ConvPlan("onednn", "onednn", "xla" if max(out_hw) <= SMALL_MAP else "onednn")
  if (kh, kw) == (1, 1):
    # XLA already runs a 1×1 forward and input gradient as a dot; its weight gradient it does not.
    return ConvPlan("xla", "xla", "matmul")

  def slow_on_xla(hw):
    return max(hw) <= SMALL_MAP and hw[0] * hw[1] * cin * cout >= MIN_WORK

  return ConvPlan(forward="matmul" if slow_on_xla(in_hw) else "xla",
                  input_grad="matmul" if slow_on_xla(out_hw) else "xla",
                  weight_grad="xla")


# ------------------------------------------------------------------------------------------------
# The two formulations. ``padding`` is explicit pairs, ``strides`` a pair.


def _xla_conv(x, kernel, strides, padding, groups=1):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=_DIMENSION_NUMBERS,
                                  feature_group_count=groups)


def _patches(x, kernel_hw, strides, padding):
  """[N, OH, OW, KH·KW·C]: each output pixel's receptive field, in the kernel's (kh, kw, c) order,
  so ``patches @ kernel.reshape(-1, O)`` is the convolution."""
  (kh, kw), (sh, sw) = kernel_hw, strides
  if any(lo or hi for lo, hi in padding):
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  n, h, w, c = x.shape
  oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
  taps = [lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _matmul_conv(x, kernel, strides, padding):
  kh, kw, c, o = kernel.shape
  p = _patches(x, (kh, kw), strides, padding)
  return lax.dot_general(p, kernel.reshape(kh * kw * c, o), (((3,), (0,)), ((), ())))


def _input_grad(impl, x_aval, kernel, dy, strides, padding, groups):
  if impl == "onednn":
    return onednn.backward_data(dy, kernel, x_aval.shape, strides=strides, padding=padding,
                                groups=groups)
  if impl == "xla":
    return jax.linear_transpose(lambda x: _xla_conv(x, kernel, strides, padding, groups),
                                x_aval)(dy)[0]
  kh, kw, c, o = kernel.shape
  # dy @ kernelᵀ gives each patch's gradient; the patches' transpose (pads and adds of the k²
  # slices) folds them back onto the input.
  dp = lax.dot_general(dy, kernel.reshape(kh * kw * c, o), (((3,), (1,)), ((), ())))
  return jax.linear_transpose(lambda x: _patches(x, (kh, kw), strides, padding), x_aval)(dp)[0]


def _weight_grad(impl, x, kernel_aval, dy, strides, padding, groups):
  if impl == "onednn":
    return onednn.backward_weights(x, dy, kernel_aval.shape, strides=strides, padding=padding,
                                   groups=groups)
  if impl == "xla":
    return jax.linear_transpose(lambda k: _xla_conv(x, k, strides, padding, groups),
                                kernel_aval)(dy)[0]
  kh, kw, c, o = kernel_aval.shape
  p = _patches(x, (kh, kw), strides, padding)
  dk = lax.dot_general(p, dy, (((0, 1, 2), (0, 1, 2)), ((), ())))
  return dk.reshape(kernel_aval.shape).astype(kernel_aval.dtype)


def _forward(x, kernel, strides, padding, plan, groups):
  if plan.forward == "onednn":
    return onednn.forward(x, kernel, strides=strides, padding=padding, groups=groups)
  if plan.forward == "xla":
    return _xla_conv(x, kernel, strides, padding, groups)
  return _matmul_conv(x, kernel, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _planned_conv(x, kernel, strides, padding, plan, groups):
  return _forward(x, kernel, strides, padding, plan, groups)


def _planned_conv_fwd(x, kernel, strides, padding, plan, groups):
  # Only the operands are kept; a matmul weight gradient rebuilds the patches from x.
  return _forward(x, kernel, strides, padding, plan, groups), (x, kernel)


def _planned_conv_bwd(strides, padding, plan, groups, residuals, dy):
  x, kernel = residuals
  x_aval = jax.ShapeDtypeStruct(x.shape, x.dtype)
  kernel_aval = jax.ShapeDtypeStruct(kernel.shape, kernel.dtype)
  # A gradient nobody uses (the images' gradient, a frozen kernel's) is removed by XLA's DCE.
  dx = _input_grad(plan.input_grad, x_aval, kernel, dy, strides, padding, groups)
  dk = _weight_grad(plan.weight_grad, x, kernel_aval, dy, strides, padding, groups)
  return dx, dk


_planned_conv.defvjp(_planned_conv_fwd, _planned_conv_bwd)


def conv(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int] = (1, 1),
         padding: Any = ((0, 0), (0, 0)), feature_group_count: int = 1,
         plan: ConvPlan | str = "xla") -> jax.Array:
  """2-D convolution of NHWC ``x`` with an HWIO ``kernel`` (same dtype), computed per ``plan``.

  ``plan``: a ``ConvPlan`` (each direction 'xla', 'matmul' or 'onednn'), or an impl name that
  ``conv_impl_rule`` turns into one. The all-XLA plan is plain ``lax.conv_general_dilated``
  (forward mode included); any other plan needs ``feature_group_count == 1``.
  """
  strides = tuple(int(s) for s in strides)
  padding = _pairs(padding, kernel.shape[:2], strides, x.shape[1:3])
  if plan == "auto" and feature_group_count == 1 and jax.default_backend() == "cpu":
    live = live_taps(x.shape[1:3], kernel.shape[:2], strides, padding)
    if live is not None:
      ((r0, r1), (c0, c1)), padding = live
      kernel = kernel[r0:r1, c0:c1]
  if isinstance(plan, str):
    plan = conv_impl_rule(x.shape, kernel.shape, strides=strides, padding=padding,
                          feature_group_count=feature_group_count, impl=plan, dtype=x.dtype)
  plan = ConvPlan(*plan)
  for direction in plan:
    if direction not in FORMULATIONS:
      raise ValueError(f"A ConvPlan holds {' or '.join(map(repr, FORMULATIONS))}, got {plan}")
  if plan == XLA:
    return _xla_conv(x, kernel, strides, padding, feature_group_count)
  if feature_group_count != 1 and "matmul" in plan:
    raise ValueError(f"The matmul formulation is for ungrouped convolutions; got "
                     f"feature_group_count={feature_group_count} with {plan}")
  if "onednn" in plan:
    onednn.require()
    if not onednn.supports(x.dtype):
      raise ValueError(f"The onednn formulation computes float32; got {x.dtype} with {plan}")
  return _planned_conv(x, kernel, strides, padding, plan, feature_group_count)


class Conv(nn.Module):
  """``nn.Conv`` for 2-D NHWC inputs, with the same parameters, computed per ``impl``.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw) (an int: square).
    strides: (sh, sw) or an int.
    padding: ((lo, hi), (lo, hi)), an int (all sides), or 'SAME' / 'VALID'.
    feature_group_count: groups (input and output channels divisible by it); grouped
      convolutions always run on XLA.
    use_bias, kernel_init, bias_init: as ``nn.Conv`` (param names "kernel" HWIO and "bias").
    dtype: compute dtype (None: from the input and the params); param_dtype: the params'.
    impl: 'xla' (nn.Conv's computation), 'matmul' or 'auto' (see the module docstring).
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Any = "SAME"
  feature_group_count: int = 1
  use_bias: bool = True
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  dtype: Any = None
  param_dtype: Any = jnp.float32
  impl: str = "xla"

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    kernel_hw = ((self.kernel_size,) * 2 if isinstance(self.kernel_size, int)
                 else tuple(self.kernel_size))
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    if len(kernel_hw) != 2 or len(strides) != 2:
      raise ValueError(f"Conv is 2-D: kernel_size {self.kernel_size!r}, strides {self.strides!r}")
    if self.impl not in IMPLS:
      raise ValueError(f"Unknown conv impl {self.impl!r}; known: {', '.join(IMPLS)}")
    # As nn.Conv: leading batch dimensions are flattened into one (none: one is added).
    batch_shape = inputs.shape[:-3]
    x = inputs.reshape((-1, *inputs.shape[-3:]))
    in_features = x.shape[-1]
    if in_features % self.feature_group_count or self.features % self.feature_group_count:
      raise ValueError(f"Channels {in_features} -> {self.features} do not split into "
                       f"{self.feature_group_count} groups")
    kernel = self.param("kernel", self.kernel_init,
                        (*kernel_hw, in_features // self.feature_group_count, self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) \
        if self.use_bias else None
    x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv(x, kernel, strides=strides, padding=self.padding,
             feature_group_count=self.feature_group_count, plan=self.impl)
    if bias is not None:
      y = y + bias.reshape(1, 1, 1, -1)
    return y.reshape((*batch_shape, *y.shape[1:]))


def layer(features: int, kernel_size: Sequence[int], strides: Sequence[int] = (1, 1), *,
          impl: str = "xla", **kwargs) -> nn.Module:
  """The conv layer a model family builds for ``impl``: ``nn.Conv`` itself for 'xla' (its very
  HLO and module), else ``Conv`` (the same parameters) computing per ``impl``."""
  if impl not in IMPLS:
    raise ValueError(f"Unknown conv impl {impl!r}; known: {', '.join(IMPLS)}")
  cls = nn.Conv if impl == "xla" else functools.partial(Conv, impl=impl)
  return cls(features, tuple(kernel_size), tuple(strides), **kwargs)


__all__ = ["Conv", "ConvPlan", "FORMULATIONS", "IMPLS", "MATMUL", "MIN_WORK", "ONEDNN",
           "ONEDNN_MIN_1X1", "SMALL_MAP", "XLA", "conv", "conv_impl_rule", "layer", "live_taps",
           "onednn_in_use"]
