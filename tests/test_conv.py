"""jtransfer.cpu.conv: the matmul and 'auto' convolutions equal XLA's in value and in both
gradients, create nn.Conv's parameters, and work under jit, vmap, pmap and bfloat16.

    .venv/bin/python -m pytest -q tests/test_conv.py        # ~15 s
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import support as testing

from jtransfer.cpu import conv as conv_lib
from jtransfer.cpu.conv import MATMUL, XLA, Conv, ConvPlan, conv, conv_impl_rule


@pytest.fixture(autouse=True)
def _without_onednn(monkeypatch):
  """These tests pin 'auto' without the oneDNN extension; tests/test_onednn.py covers it with."""
  monkeypatch.setenv("JTRANSFER_ONEDNN", "0")

# (name, x shape NHWC, kernel HWIO, strides, padding, groups). Small batches keep the float64
# XLA convolutions quick; the 2×2 maps with 64 channels are where 'auto' picks the matmul.
CASES = [
    ("1x1 s1", (2, 5, 5, 6), (1, 1, 6, 4), (1, 1), ((0, 0), (0, 0)), 1),
    ("1x1 s2 odd map", (2, 7, 5, 6), (1, 1, 6, 4), (2, 2), ((0, 0), (0, 0)), 1),
    ("3x3 s1 p1 non-square", (2, 9, 7, 5), (3, 3, 5, 8), (1, 1), ((1, 1), (1, 1)), 1),
    ("3x3 s2 p1 odd map", (2, 9, 9, 4), (3, 3, 4, 6), (2, 2), ((1, 1), (1, 1)), 1),
    ("3x3 asymmetric pad and stride", (2, 8, 6, 3), (3, 3, 3, 5), (2, 1), ((1, 2), (0, 1)), 1),
    ("7x7 s2 p3 stem", (2, 16, 16, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3)), 1),
    ("3x3 s1 on 2x2 (auto: matmul)", (2, 2, 2, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)), 1),
    ("3x3 s1 on 1x1 (auto: its centre tap)", (2, 1, 1, 96), (3, 3, 96, 96), (1, 1),
     ((1, 1), (1, 1)), 1),
    ("3x3 s2 4x4 -> 2x2 (auto: input grad)", (2, 4, 4, 32), (3, 3, 32, 96), (2, 2),
     ((1, 1), (1, 1)), 1),
    ("3x3 s2 2x2 -> 1x1 (auto: its 2x2 live taps)", (2, 2, 2, 32), (3, 3, 32, 48), (2, 2),
     ((1, 1), (1, 1)), 1),
    ("3x3 grouped", (2, 6, 6, 8), (3, 3, 2, 8), (1, 1), ((1, 1), (1, 1)), 4),
]
PLANS = ["matmul", "auto", ConvPlan("xla", "matmul", "matmul"), ConvPlan("matmul", "xla", "xla")]


def _data(x_shape, k_shape, dtype, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=x_shape), dtype),
          jnp.asarray(rng.normal(size=k_shape) / np.sqrt(np.prod(k_shape[:3])), dtype))


def _value_and_grads(plan, x, k, strides, padding, groups):
  """The output and the gradients of a non-linear scalar of it, so both gradients get a
  cotangent that differs per output element."""
  def f(x, k):
    y = conv(x, k, strides=strides, padding=padding, feature_group_count=groups, plan=plan)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size), y
  (_, y), (dx, dk) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, k)
  return y, dx, dk


def _all_plans(plans, x, k, strides, padding, groups):
  """Every plan's (output, input grad, weight grad) from one compiled program: one compilation
  per case instead of one per plan (or, eagerly, one per slice of the patches)."""
  return jax.jit(lambda x, k: [_value_and_grads(p, x, k, strides, padding, groups)
                               for p in plans])(x, k)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_plan_equals_xla_in_float64(case):
  _, x_shape, k_shape, strides, padding, groups = case
  plans = PLANS if groups == 1 else ["matmul", "auto"]  # grouped: both fall back to XLA
  with jax.enable_x64(True):
    x, k = _data(x_shape, k_shape, jnp.float64)
    want, *got = _all_plans(["xla", *plans], x, k, strides, padding, groups)
    for plan, results in zip(plans, got):
      for name, g, w in zip(("forward", "input grad", "weight grad"), results, want):
        assert g.shape == w.shape and g.dtype == jnp.float64
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"{plan} {name}")


@pytest.mark.parametrize("case", CASES[5:9], ids=[c[0] for c in CASES[5:9]])
def test_matmul_equals_xla_in_float32(case):
  _, x_shape, k_shape, strides, padding, groups = case
  x, k = _data(x_shape, k_shape, jnp.float32)
  want, got = _all_plans(["xla", "matmul"], x, k, strides, padding, groups)
  for g, w in zip(got, want):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)


def test_auto_drops_the_taps_that_touch_only_padding():
  pad = ((1, 1), (1, 1))
  # A 3×3 kernel on a 1×1 image: its centre; 2×2 -> 1×1 at stride 2: its lower-right 2×2.
  assert conv_lib.live_taps((1, 1), (3, 3), (1, 1), pad) == (((1, 2), (1, 2)), ((0, 0), (0, 0)))
  assert conv_lib.live_taps((2, 2), (3, 3), (2, 2), pad) == (((1, 3), (1, 3)), ((0, 0), (0, 0)))
  assert conv_lib.live_taps((1, 4), (3, 3), (1, 1), pad) == (((1, 2), (0, 3)), ((0, 0), (1, 1)))
  for hw, s in [((2, 2), (1, 1)), ((56, 56), (1, 1)), ((7, 7), (2, 2))]:
    assert conv_lib.live_taps(hw, (3, 3), s, pad) is None
  # 'auto' computes the 1×1 image's convolution with the 1×1 kernel (its value and gradients
  # equal XLA's: CASES); the explicit plans keep the whole kernel.
  x, k = _data((2, 1, 1, 8), (3, 3, 8, 8), jnp.float32)
  jaxpr = lambda plan: str(jax.make_jaxpr(lambda x, k: conv(x, k, padding=pad, plan=plan))(x, k))
  assert "f32[1,1,8,8]" in jaxpr("auto") and "f32[1,1,8,8]" not in jaxpr("matmul")


def test_rule_picks_matmul_only_for_tiny_maps_on_cpu():
  pad = ((1, 1), (1, 1))
  rule = lambda x, k, s=(1, 1), **kw: conv_impl_rule(x, k, strides=s, padding=pad, **kw)
  # ResNet-18 at 32 px with the ImageNet stem: layer3 (2×2) and layer4 (1×1).
  assert rule((128, 2, 2, 256), (3, 3, 256, 256), backend="cpu") == ConvPlan(
      "matmul", "matmul", "xla")
  assert rule((128, 1, 1, 512), (3, 3, 512, 512), backend="cpu") == ConvPlan(
      "matmul", "matmul", "xla")
  # layer3.0.conv1: a 4×4 input XLA handles, a 2×2 output gradient it does not.
  assert rule((128, 4, 4, 128), (3, 3, 128, 256), (2, 2), backend="cpu") == ConvPlan(
      "xla", "matmul", "xla")
  assert rule((128, 2, 2, 256), (3, 3, 256, 512), (2, 2), backend="cpu") == ConvPlan(
      "matmul", "matmul", "xla")
  # 1×1 kernels, any map: only the weight gradient, as one dot.
  for x_shape, strides in (((128, 2, 2, 256), (2, 2)), ((32, 56, 56, 64), (1, 1))):
    assert conv_impl_rule(x_shape, (1, 1, x_shape[-1], 512), strides=strides,
                          padding=((0, 0), (0, 0)), backend="cpu") == ConvPlan(
                              "xla", "xla", "matmul")
  # Everything else stays on XLA: larger maps, too little work, groups, GPU/TPU.
  assert rule((128, 4, 4, 512), (3, 3, 512, 512), backend="cpu") == XLA
  assert rule((32, 7, 7, 512), (3, 3, 512, 512), backend="cpu") == XLA
  assert rule((128, 1, 1, 64), (3, 3, 64, 64), backend="cpu") == XLA
  assert rule((128, 2, 2, 256), (3, 3, 64, 256), feature_group_count=4, backend="cpu") == XLA
  assert rule((128, 2, 2, 256), (3, 3, 256, 256), backend="gpu") == XLA
  assert rule((128, 2, 2, 256), (3, 3, 256, 256), backend="tpu") == XLA
  # Forced impls.
  assert rule((8, 64, 64, 3), (3, 3, 3, 8), impl="matmul") == MATMUL
  assert rule((128, 2, 2, 256), (3, 3, 256, 256), impl="xla", backend="cpu") == XLA
  with pytest.raises(ValueError, match="Unknown conv impl"):
    rule((1, 2, 2, 1), (3, 3, 1, 1), impl="oneDNN")


def test_auto_follows_the_default_backend(monkeypatch):
  shape = ((128, 2, 2, 256), (3, 3, 256, 256))
  kw = dict(strides=(1, 1), padding=((1, 1), (1, 1)))
  monkeypatch.setattr(conv_lib.jax, "default_backend", lambda: "gpu")
  assert conv_impl_rule(*shape, **kw) == XLA
  monkeypatch.setattr(conv_lib.jax, "default_backend", lambda: "cpu")
  assert conv_impl_rule(*shape, **kw).forward == "matmul"


@pytest.mark.parametrize("kwargs", [
    dict(features=8, kernel_size=(3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)], use_bias=False,
         kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal")),
    dict(features=8, kernel_size=(1, 1), padding="VALID"),
    dict(features=8, kernel_size=(3, 3), feature_group_count=2, padding="SAME"),
], ids=["resnet-style", "1x1 with bias", "grouped, SAME"])
def test_same_parameters_as_nn_conv_and_xla_is_nn_conv(kwargs):
  x, _ = _data((2, 6, 6, 4), (1, 1, 1, 1), jnp.float32)
  ref = nn.Conv(**kwargs)
  impls = ("xla", "matmul", "auto")
  mods = [ref] + [Conv(**kwargs, impl=impl) for impl in impls]
  # One program for every init and apply (eagerly, the matmul would compile slice by slice).
  inits, outs = jax.jit(lambda key, x: (
      [m.init(key, x) for m in mods],
      [m.apply(init, x) for m, init in zip(mods, [m.init(key, x) for m in mods])]))(
          jax.random.key(3), x)
  want, *got = inits
  for impl, variables in zip(impls, got):
    assert jax.tree.structure(variables) == jax.tree.structure(want), impl
    for g, w in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
      assert g.shape == w.shape and g.dtype == w.dtype
      np.testing.assert_array_equal(g, w)
  ref_out, xla_out, matmul_out, auto_out = outs
  # 'xla' is nn.Conv's very computation: bitwise.
  np.testing.assert_array_equal(xla_out, ref_out)
  for out in (matmul_out, auto_out):
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)


def test_batch_dims_like_nn_conv():
  layer = dict(features=5, kernel_size=(3, 3), padding=[(1, 1), (1, 1)])
  x, _ = _data((3, 2, 4, 4, 6), (1, 1, 1, 1), jnp.float32)
  variables = nn.Conv(**layer).init(jax.random.key(0), x[0])
  for xs in (x, x[0, 0]):  # two leading batch dims; none
    want = nn.Conv(**layer).apply(variables, xs)
    got = jax.jit(Conv(**layer, impl="matmul").apply)(variables, xs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _layer_and_loss(impl, dtype=jnp.float32):
  # 2×2 maps with 64 channels: 'auto' runs the matmul forward and input gradient here.
  layer = Conv(64, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False, dtype=dtype, impl=impl)

  def loss(params, x):
    return jnp.sum(jnp.square(layer.apply({"params": params}, x).astype(jnp.float32)))
  return layer, loss


def test_jit_vmap_and_pmap():
  x, _ = _data((4, 2, 2, 64), (1, 1, 1, 1), jnp.float32)
  layer, loss = _layer_and_loss("auto")
  assert conv_impl_rule(x.shape, (3, 3, 64, 64), padding=((1, 1), (1, 1))).forward == "matmul"
  params = layer.init(jax.random.key(0), x)["params"]
  _, ref_loss = _layer_and_loss("xla")
  want = jax.grad(ref_loss, argnums=(0, 1))(params, x)

  got = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)

  # vmap over a leading axis of per-example inputs (each [1, 2, 2, 64]), gradients included.
  per_example = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(None, 0)))(
      params, x[:, None])
  np.testing.assert_allclose(jnp.sum(per_example[0]["kernel"], 0), want[0]["kernel"],
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(per_example[1][:, 0], want[1], rtol=1e-4, atol=1e-4)

  # pmap over the local devices with a gradient mean across the mapped axis.
  n = jax.local_device_count()
  def step(params, x):
    return jax.lax.pmean(jax.grad(loss)(params, x), "batch")
  xs = jnp.broadcast_to(x, (n, *x.shape))
  g = jax.pmap(step, axis_name="batch", in_axes=(None, 0))(params, xs)
  np.testing.assert_allclose(g["kernel"][0], want[0]["kernel"], rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
  x, _ = _data((2, 2, 2, 64), (1, 1, 1, 1), jnp.float32)
  ref_layer, ref_loss = _layer_and_loss("xla")
  params = ref_layer.init(jax.random.key(0), x)["params"]
  want = jax.grad(ref_loss)(params, x)["kernel"]
  for impl in ("matmul", "auto"):
    layer, loss = _layer_and_loss(impl, jnp.bfloat16)
    y = jax.jit(layer.apply)({"params": params}, x)
    assert y.dtype == jnp.bfloat16
    g = jax.jit(jax.grad(loss))(params, x)["kernel"]
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_allclose(g, want, rtol=0.05, atol=0.05 * float(jnp.abs(want).max()))


def test_bad_arguments():
  x, k = _data((1, 4, 4, 4), (3, 3, 2, 4), jnp.float32)
  with pytest.raises(ValueError, match="ungrouped"):
    conv(x, k, padding=((1, 1), (1, 1)), feature_group_count=2, plan=MATMUL)
  with pytest.raises(ValueError, match="Unknown conv impl"):
    Conv(4, (3, 3), impl="cudnn").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="ConvPlan"):
    conv(x, k[:, :, :1].repeat(4, 2), plan=ConvPlan("xla", "im2col", "xla"))


def test_resnet_conv_impl_is_a_model_option_with_the_same_numbers():
  """A ResNet-18 (ImageNet stem, 32 px: layer3/layer4 run on 2x2 and 1x1 maps, where 'auto' picks
  the matmul) with conv_impl 'auto' / 'matmul': same parameters as 'xla', equal logits and equal
  gradients of a train-mode loss (BatchNorm in batch-statistics mode) in float64."""
  from jtransfer import models  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float64)
    y = jnp.arange(4) % 10
    base = models.create("resnet18", num_classes=10, base_planes=16, dtype=jnp.float64)
    variables = base.init(testing.init_key(), x)
    variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)

    def loss(model, params):
      (logits, _), _ = model.apply({**variables, "params": params}, x, train=True,
                                   mutable=["batch_stats"])
      return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(4), y]), logits

    ref = jax.jit(jax.value_and_grad(lambda p: loss(base, p), has_aux=True))(variables["params"])
    for impl in ("auto", "matmul"):
      model = models.create("resnet18", num_classes=10, base_planes=16, dtype=jnp.float64,
                            conv_impl=impl)
      shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
      assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, variables)
      got = jax.jit(jax.value_and_grad(lambda p, m=model: loss(m, p), has_aux=True))(
          variables["params"])
      np.testing.assert_allclose(got[0][1], ref[0][1], rtol=1e-9, atol=1e-9)
      for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(ref[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
  with pytest.raises(ValueError, match="conv_impl"):
    models.create("resnet18", num_classes=10, conv_impl="fast")
