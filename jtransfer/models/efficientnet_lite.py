"""EfficientNet-Lite0..4 in flax.linen (NHWC), mirroring the PyTorch reference so weights map by name.

    from jtransfer.models.efficientnet_lite import IMAGE_SIZE, SPEC
    model = SPEC.create("efficientnet_lite0", num_classes=10)
    size = IMAGE_SIZE["efficientnet_lite0"]                  # 224, the ImageNet weights' side
    x = jnp.zeros((1, size, size, 3))                        # (pixels - 127.5) / 128
    variables = model.init(jax.random.key(0), x)
    logits, features = model.apply(variables, x, train=False)
    features["pre_logits"]  # [N, 1280]; also "stem", "stage1" ... "stage7", "head"

The reference is ``efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")``
(lukemelas' EfficientNet-PyTorch with the TF-Lite variants): MBConv blocks without
squeeze-excite, ReLU6, a stem (32) and head (1280) that do not scale with the width, BatchNorm
momentum 0.01 (torch's convention; flax's 0.99) and epsilon 1e-3, TF "SAME" padding.

Parameter paths are grouped by the reference's seven block groups, so freezing rules can name
stages: ``stem/conv``, ``stem/bn``; ``stage3/4/depthwise_conv/kernel``; ``head/conv``,
``head/bn``; the classifier ``fc``. A block keeps the reference's *global* number
(``_blocks.4`` is ``stage3/4`` in lite0), so ``reference_key`` maps a path to its state-dict key
without knowing the architecture. Blocks hold ``expand_conv``/``bn0`` (absent when the expansion
is 1), ``depthwise_conv``/``bn1`` and ``project_conv``/``bn2``, as in the reference.

Padding: the reference pads every convolution as TensorFlow's "SAME" does (the odd pixel at the
bottom and right), but computes the amounts once, for the image size it was built for (224 for
Lite0). At that size, and at any size whose side stays even before every stride-2 convolution,
this is the same as padding for the actual input; where a side is odd there (200x168: 25x21
before stage4) the two differ, in the output's spatial size too. The family option
``padding="same"`` (default) pads for the actual input: what TensorFlow's originals do, and what
``from_name(arch, image_size=(h, w))`` does. ``padding="static"`` pads for ``IMAGE_SIZE[arch]``
whatever the input, as plain ``from_name(arch)`` does. Both are golden-tested at 200x168.

Speed on the CPU: the depthwise convolutions run as shifted slices (``depthwise_impl="auto"``),
since XLA:CPU's grouped convolution made a Lite0 train step several times slower. The slices
compile slowly under ``--xla_cpu_experimental_ynn_fusion_type=...,eltwise,...`` (tens of seconds
for a forward pass; a few without ``eltwise``); ``depthwise_impl="xla"`` compiles fast.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtransfer.cpu import conv as conv_lib
from jtransfer.models.layers import BatchNormSpec, resolve_dtype
from jtransfer.models.spec import ModelSpec


class Arch(NamedTuple):
  """One row of the reference's ``efficientnet_params`` table."""
  width: float       # channel multiplier
  depth: float       # block-count multiplier
  resolution: int    # the input side the ImageNet weights were trained at
  dropout: float     # the reference's dropout before the classifier (training recipe)


ARCHS: dict[str, Arch] = {
    "efficientnet_lite0": Arch(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": Arch(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": Arch(1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": Arch(1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": Arch(1.4, 1.8, 300, 0.3),
}

IMAGE_SIZE: dict[str, int] = {name: a.resolution for name, a in ARCHS.items()}


class BlockGroup(NamedTuple):
  """One of the reference's block strings ('r2_k3_s22_e6_i16_o24'), before scaling."""
  repeats: int
  kernel: int
  stride: int
  expand: int
  in_features: int
  out_features: int


# efficientnet_lite_builder.py's table; the groups are the stages stage1..stage7.
BLOCK_GROUPS = (
    BlockGroup(1, 3, 1, 1, 32, 16),
    BlockGroup(2, 3, 2, 6, 16, 24),
    BlockGroup(2, 5, 2, 6, 24, 40),
    BlockGroup(3, 3, 2, 6, 40, 80),
    BlockGroup(3, 5, 1, 6, 80, 112),
    BlockGroup(4, 5, 2, 6, 112, 192),
    BlockGroup(1, 3, 1, 6, 192, 320),
)
STEM_FEATURES = 32     # Lite fixes the stem and head widths: they do not scale with the width.
HEAD_FEATURES = 1280

# The reference's BatchNorm: torch momentum 1 - 0.99 (flax counts the other way) and eps 1e-3.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3

PADDINGS = ("same", "static")
DEPTHWISE_IMPLS = ("auto", "xla", "slices", "onednn")

# TF's EfficientNet initialisers: He-normal over fan-out. A depthwise kernel is (kh, kw, 1, C)
# here but (kh, kw, C, 1) in TF, so TF's fan-out (kh*kw) is flax's fan-in.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
depthwise_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def _head_init(num_features: int):
  # The reference's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the ResNets' head.
  bound = 1.0 / float(num_features) ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def round_filters(filters: int, width: float) -> int:
  """The reference's ``round_filters``: scale, round to a multiple of 8, never drop below 90%."""
  scaled = filters * width
  new = max(8, int(scaled + 4) // 8 * 8)
  return int(new + 8 if new < 0.9 * scaled else new)


def stage_groups(arch: str) -> tuple[BlockGroup, ...]:
  """The seven block groups of ``arch`` after width/depth scaling, as the reference builds them.

  The first and last groups keep their repeats (``fix_head_stem``), and the first one's input is
  the unscaled stem.
  """
  a = ARCHS[arch]
  out = []
  for i, g in enumerate(BLOCK_GROUPS):
    fixed = i in (0, len(BLOCK_GROUPS) - 1)
    out.append(g._replace(
        repeats=g.repeats if fixed else int(math.ceil(a.depth * g.repeats)),
        in_features=STEM_FEATURES if i == 0 else round_filters(g.in_features, a.width),
        out_features=round_filters(g.out_features, a.width)))
  return tuple(out)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow "SAME" for one side: output ceil(size / stride), the odd pixel at the end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class DepthwiseConv(nn.Module):
  """A depthwise k×k convolution with a (kh, kw, 1, C) kernel, as ``nn.Conv`` with
  ``feature_group_count=C`` lays it out.

  ``impl='xla'`` is one grouped convolution; ``'slices'`` the same sum written as k² shifted,
  strided slices times a per-channel weight; ``'onednn'`` oneDNN's depthwise kernels in all three
  directions (``jtransfer.cpu.onednn``; float32, CPU). ``'auto'`` on the CPU backend is
  'onednn' when the model's ``conv_impl`` is not 'xla' and the extension is in use
  (``conv.onednn_in_use``), else 'slices'; elsewhere 'xla'. All have the same parameters and
  agree to rounding.

  Why: XLA:CPU's grouped convolution (jaxlib 0.10, 2 cores) ran a 3x3 depthwise layer of
  Lite0 3-4x slower forward and 4-5x slower forward+backward than the slices, and a whole Lite0
  train step 5.7x slower (scripts/bench_efficientnet_lite.py). oneDNN's backward directions were
  3-9x faster again than the slices' gradient at 224 px and 3x at 8×8 maps; its forward within
  0.8-3x of theirs (BENCHMARKS.md). On GPU/TPU 'auto' keeps XLA's convolution (cuDNN's depthwise
  kernels), which was not measured here.
  """
  kernel_size: int
  stride: int
  padding: tuple[tuple[int, int], tuple[int, int]]
  impl: str = "auto"
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    k, s, c = self.kernel_size, self.stride, x.shape[-1]
    kernel = self.param("kernel", depthwise_init, (k, k, 1, c), jnp.float32).astype(self.dtype)
    impl = self.impl
    if impl == "auto" and jax.default_backend() != "cpu":
      impl = "xla"
    elif impl == "auto":
      fast = self.conv_impl != "xla" and conv_lib.onednn_in_use(kernel.dtype)
      impl = "onednn" if fast else "slices"
    if impl == "onednn":
      return conv_lib.conv(x, kernel, strides=(s, s), padding=self.padding, feature_group_count=c,
                           plan=conv_lib.ONEDNN)
    if impl == "xla":
      return jax.lax.conv_general_dilated(
          x, kernel, (s, s), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
          feature_group_count=c)
    x = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
    oh = (x.shape[1] - k) // s + 1
    ow = (x.shape[2] - k) // s + 1
    out = None
    for i in range(k):
      for j in range(k):
        tap = x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :] * kernel[i, j, 0]
        out = tap if out is None else out + tap
    return out


class MBConv(nn.Module):
  """Inverted residual: 1×1 expand → k×k depthwise → 1×1 project, ReLU6, no squeeze-excite."""
  in_features: int
  out_features: int
  expand: int
  kernel_size: int
  stride: int
  padding: tuple[tuple[int, int], tuple[int, int]]
  norm: BatchNormSpec
  drop_connect_rate: float = 0.0
  depthwise_impl: str = "auto"
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool):
    conv1x1 = lambda f, name: conv_lib.layer(f, (1, 1), impl=self.conv_impl, use_bias=False,
                                             padding="VALID", kernel_init=conv_init,
                                             dtype=self.dtype, param_dtype=jnp.float32, name=name)
    y = x
    if self.expand != 1:
      y = nn.relu6(self.norm(self, "bn0", conv1x1(self.in_features * self.expand, "expand_conv")(y),
                             train))
    y = DepthwiseConv(self.kernel_size, self.stride, self.padding, self.depthwise_impl, self.dtype,
                      self.conv_impl, name="depthwise_conv")(y)
    y = nn.relu6(self.norm(self, "bn1", y, train))
    y = self.norm(self, "bn2", conv1x1(self.out_features, "project_conv")(y), train)
    if self.stride == 1 and self.in_features == self.out_features:
      if self.drop_connect_rate > 0:
        # The reference's drop_connect: drop the whole residual branch per example, rescaled.
        y = nn.Dropout(self.drop_connect_rate, broadcast_dims=(1, 2, 3),
                       deterministic=not train)(y)
      y = y + x
    return y


class Stage(nn.Module):
  """One of the reference's block groups; blocks keep the reference's global numbers as names.

  Only the first block strides, so only its padding depends on the input size; the stride-1
  blocks pad k//2 on each side, as "SAME" does for an odd kernel at any size.
  """
  group: BlockGroup
  first: int
  padding: tuple[tuple[int, int], tuple[int, int]]
  norm: BatchNormSpec
  drop_connect_rates: tuple[float, ...]
  depthwise_impl: str = "auto"
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool):
    g = self.group
    same = ((g.kernel // 2,) * 2,) * 2
    for r in range(g.repeats):
      x = MBConv(g.in_features if r == 0 else g.out_features, g.out_features, g.expand, g.kernel,
                 g.stride if r == 0 else 1, self.padding if r == 0 else same, self.norm,
                 self.drop_connect_rates[r], self.depthwise_impl, self.dtype, self.conv_impl,
                 name=str(self.first + r))(x, train)
    return x


class ConvBN(nn.Module):
  """conv → BatchNorm → ReLU6: the stem (3×3 stride 2) and the head (1×1)."""
  features: int
  kernel_size: int
  stride: int
  padding: tuple[tuple[int, int], tuple[int, int]]
  norm: BatchNormSpec
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool):
    k, s = self.kernel_size, self.stride
    x = conv_lib.layer(self.features, (k, k), (s, s), impl=self.conv_impl, padding=self.padding,
                       use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                       param_dtype=jnp.float32, name="conv")(x)
    return nn.relu6(self.norm(self, "bn", x, train))


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite returning ``(logits, features)``.

  Attributes:
    groups: the seven scaled block groups (``stage_groups(arch)``).
    num_classes: head size; ``None`` builds no head (logits are ``None``): a feature extractor.
    dtype: compute dtype (params always float32).
    frozen_bn: regexes over BatchNorm module paths (``"^(stem|stage[1-4])/"``) whose BatchNorm uses
      running statistics even when ``train=True``, so its ``batch_stats`` never change.
    dropout_rate: dropout on ``pre_logits`` before the head (needs a "dropout" rng in training).
    drop_connect_rate: the reference's stochastic depth: residual block ``n`` of ``N`` drops its
      branch with probability ``rate * n / N`` in training (the reference trains with 0.2).
    bn_axis_name: average batch statistics over this mapped axis (under ``pmap``).
    padding: "same" or "static" (see the module docstring); ``static_size`` is the side "static"
      pads for.
    depthwise_impl: "auto" (default), "xla", "slices" or "onednn" (``DepthwiseConv``).
    conv_impl: how the stem, 1×1 and head convolutions compute: "xla" (default), "matmul",
      "onednn" or "auto" (``jtransfer.cpu.conv``; docs/speed.md). Any but "xla" also lets
      ``depthwise_impl="auto"`` use oneDNN's depthwise kernels where the extension is built.
  """
  groups: tuple[BlockGroup, ...]
  num_classes: int | None = 1000
  dtype: Any = jnp.float32
  frozen_bn: tuple[str, ...] = ()
  dropout_rate: float = 0.0
  drop_connect_rate: float = 0.0
  bn_axis_name: str | None = None
  padding: str = "same"
  static_size: int = 224
  depthwise_impl: str = "auto"
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = BatchNormSpec(tuple(self.frozen_bn), self.dtype, momentum=BN_MOMENTUM,
                         epsilon=BN_EPSILON, axis_name=self.bn_axis_name)
    # "static" pads for the side the reference was built for, followed through the strides.
    nominal = (self.static_size,) * 2 if self.padding == "static" else None

    def pads(x, k, s):
      nonlocal nominal
      size = nominal or x.shape[1:3]
      if nominal is not None:
        nominal = tuple(-(-n // s) for n in nominal)
      return tuple(same_padding(n, k, s) for n in size)

    features = {}
    x = x.astype(self.dtype)
    x = ConvBN(STEM_FEATURES, 3, 2, pads(x, 3, 2), norm, self.dtype, self.conv_impl,
               name="stem")(x, train)
    features["stem"] = x
    total = sum(g.repeats for g in self.groups)
    first = 0
    for i, g in enumerate(self.groups):
      rates = tuple(self.drop_connect_rate * (first + r) / total for r in range(g.repeats))
      x = Stage(g, first, pads(x, g.kernel, g.stride), norm, rates, self.depthwise_impl,
                self.dtype, self.conv_impl, name=f"stage{i + 1}")(x, train)
      features[f"stage{i + 1}"] = x
      first += g.repeats
    x = ConvBN(HEAD_FEATURES, 1, 1, ((0, 0), (0, 0)), norm, self.dtype, self.conv_impl,
               name="head")(x, train)
    features["head"] = x
    x = jnp.mean(x, axis=(1, 2))
    features["pre_logits"] = x
    if self.num_classes is None:
      return None, features
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      kernel_init=_head_init(x.shape[-1]), bias_init=_head_init(x.shape[-1]),
                      name="fc")(x)
    return logits.astype(jnp.float32), features


def build(arch: str, *, num_classes: int | None = 1000, dtype: Any = "float32",
          frozen_bn: tuple[str, ...] = (), dropout_rate: float = 0.0,
          bn_axis_name: str | None = None, drop_connect_rate: float = 0.0,
          padding: str = "same", depthwise_impl: str = "auto",
          conv_impl: str = "xla") -> EfficientNetLite:
  """Builds ``arch`` (a key of ``ARCHS``); see ``EfficientNetLite`` for the options.

  ``dropout_rate`` is the caller's, not the reference's training value (``ARCHS[arch].dropout``).
  """
  if arch not in ARCHS:
    raise ValueError(f"Unknown EfficientNet-Lite arch {arch!r}; known: {', '.join(ARCHS)}")
  if padding not in PADDINGS:
    raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
  if depthwise_impl not in DEPTHWISE_IMPLS:
    raise ValueError(f"depthwise_impl must be one of {DEPTHWISE_IMPLS}, got {depthwise_impl!r}")
  if conv_impl not in conv_lib.IMPLS:
    raise ValueError(f"conv_impl must be one of {conv_lib.IMPLS}, got {conv_impl!r}")
  if not 0.0 <= drop_connect_rate < 1.0:
    raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}")
  return EfficientNetLite(
      groups=stage_groups(arch), num_classes=num_classes, dtype=resolve_dtype(dtype),
      frozen_bn=tuple(frozen_bn), dropout_rate=dropout_rate, drop_connect_rate=drop_connect_rate,
      bn_axis_name=bn_axis_name, padding=padding, static_size=IMAGE_SIZE[arch],
      depthwise_impl=depthwise_impl, conv_impl=conv_impl)


# (collection, flax leaf of a BatchNorm) -> the reference's tensor name.
_BN_KEYS = {("params", "scale"): "weight", ("params", "bias"): "bias",
            ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
# Flax module -> the reference's, outside the blocks.
_TOP = {("stem", "conv"): "_conv_stem", ("stem", "bn"): "_bn0",
        ("head", "conv"): "_conv_head", ("head", "bn"): "_bn1"}
_BLOCK_MODULES = ("expand_conv", "bn0", "depthwise_conv", "bn1", "project_conv", "bn2")


def reference_key(collection: str, path: tuple[str, ...]) -> str:
  """``(collection, flax path)`` -> the reference's state-dict key, for any arch.

      reference_key("params", ("stage1", "0", "depthwise_conv", "kernel"))
      # '_blocks.0._depthwise_conv.weight'
      reference_key("batch_stats", ("head", "bn", "var"))   # '_bn1.running_var'

  A path this family does not have is a ``ValueError``: every leaf has a counterpart.
  """
  path = tuple(path)
  *mods, leaf = path
  if len(mods) == 1 and mods[0] == "fc" and collection == "params" and leaf in ("kernel", "bias"):
    return f"_fc.{'weight' if leaf == 'kernel' else 'bias'}"
  if len(mods) == 2 and tuple(mods) in _TOP:
    module = _TOP[tuple(mods)]
  elif (len(mods) == 3 and re.fullmatch(r"stage[1-7]", mods[0]) and mods[1].isdigit()
        and mods[2] in _BLOCK_MODULES):
    module = f"_blocks.{mods[1]}._{mods[2]}"
  else:
    raise ValueError(f"No EfficientNet-Lite reference key for {collection} {'/'.join(path)}")
  if mods[-1].endswith("conv") and collection == "params" and leaf == "kernel":
    return f"{module}.weight"
  if not mods[-1].endswith("conv") and (collection, leaf) in _BN_KEYS:
    return f"{module}.{_BN_KEYS[(collection, leaf)]}"
  raise ValueError(f"No EfficientNet-Lite reference key for {collection} {'/'.join(path)}")


SPEC = ModelSpec(
    family="efficientnet_lite",
    archs=tuple(ARCHS),
    build=build,
    options={"drop_connect_rate": 0.0, "padding": "same", "depthwise_impl": "auto",
             "conv_impl": "xla"},
    # The 1x1 head conv (320 -> 1280, Keras' "top_conv") is the last stage: it is a feature
    # layer the ImageNet weights provide, so "train the last stage" means head conv + fc, as
    # ResNet's layer4 + fc; only the classifier ``fc`` is re-initialised for a new task.
    stages=(r"^stem/", *(rf"^stage{i}/" for i in range(1, 8)), r"^head/"),
    head=r"^fc/",
    normalize={"mean": (0.5,) * 3, "std": (128 / 255,) * 3},  # (pixels - 127.5) / 128
    reference_key=reference_key,
    execution_options=("conv_impl", "depthwise_impl"),
    sample_size=32,
    native_size=dict(IMAGE_SIZE),
)

__all__ = ["ARCHS", "Arch", "BLOCK_GROUPS", "BN_EPSILON", "BN_MOMENTUM", "BlockGroup", "ConvBN",
           "DepthwiseConv", "EfficientNetLite", "IMAGE_SIZE", "MBConv", "SPEC", "Stage", "build",
           "reference_key", "round_filters", "same_padding", "stage_groups"]
