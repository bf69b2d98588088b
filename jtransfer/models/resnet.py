"""ResNet v1.5 in flax.linen, laid out exactly like torchvision's so weights map by name.

    from jtransfer import models
    model = models.create("resnet50", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    logits, features = model.apply(variables, images_nhwc, train=False)
    features["pre_logits"]  # [N, 2048]; also features["stem"], features["layer1"] ... ["layer4"]

Parameter paths mirror torchvision's state-dict keys: ``layer3/1/conv2/kernel`` is
``layer3.1.conv2.weight``; a block's projection shortcut is ``downsample_conv`` / ``downsample_bn``
(torchvision's ``downsample.0`` / ``downsample.1``); the head is ``fc``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jtransfer.cpu import conv as conv_lib
from jtransfer.cpu import pool
from jtransfer.models.layers import BatchNormSpec, classifier_head, resolve_dtype
from jtransfer.models.spec import ModelSpec

# torchvision's BatchNorm2d: momentum 0.1 (flax counts the other way: 0.9) and eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# torchvision's transforms.Normalize for its ImageNet weights (of x / 255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Kaiming-normal (fan_out, relu) as torchvision initialises its convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def make_conv(dtype: Any, impl: str = "xla") -> Any:
  """The convolution every ResNet layer uses: bias-free, torchvision's init, float32 params.

  ``impl``: 'xla' is ``nn.Conv``; 'matmul', 'onednn' and 'auto' are ``cpu.conv.Conv`` (same
  parameters, each direction computed as XLA's convolution, as patches times one matmul, or by
  the optional oneDNN extension; 'auto' picks per layer shape on the CPU and is 'xla' elsewhere;
  docs/speed.md).
  """
  def conv(features, kernel, stride, pad, name, groups=1):
    return conv_lib.layer(features, (kernel, kernel), (stride, stride), impl=impl,
                          padding=[(pad, pad), (pad, pad)], use_bias=False,
                          feature_group_count=groups, kernel_init=conv_init, dtype=dtype,
                          param_dtype=jnp.float32, name=name)
  return conv


class BasicBlock(nn.Module):
  """Two 3×3 convolutions (ResNet-18/34). ``groups`` and ``base_width`` must keep their defaults."""
  planes: int
  stride: int = 1
  groups: int = 1
  base_width: int = 64
  norm: Any = None
  conv: Any = None
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    y = self.conv(self.planes, 3, self.stride, 1, "conv1")(x)
    y = nn.relu(self.norm(self, "bn1", y, train))
    y = self.conv(self.planes, 3, 1, 1, "conv2")(y)
    y = self.norm(self, "bn2", y, train, last=True)
    if self.stride != 1 or x.shape[-1] != self.planes:
      x = self.conv(self.planes, 1, self.stride, 0, "downsample_conv")(x)
      x = self.norm(self, "downsample_bn", x, train)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1×1 → 3×3 (stride here: v1.5) → 1×1 ×4, with grouped 3×3 for ResNeXt."""
  planes: int
  stride: int = 1
  groups: int = 1
  base_width: int = 64
  norm: Any = None
  conv: Any = None
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    width = int(self.planes * (self.base_width / 64.0)) * self.groups
    out = self.planes * self.expansion
    y = self.conv(width, 1, 1, 0, "conv1")(x)
    y = nn.relu(self.norm(self, "bn1", y, train))
    y = self.conv(width, 3, self.stride, 1, "conv2", self.groups)(y)
    y = nn.relu(self.norm(self, "bn2", y, train))
    y = self.conv(out, 1, 1, 0, "conv3")(y)
    y = self.norm(self, "bn3", y, train, last=True)
    if self.stride != 1 or x.shape[-1] != out:
      x = self.conv(out, 1, self.stride, 0, "downsample_conv")(x)
      x = self.norm(self, "downsample_bn", x, train)
    return nn.relu(x + y)


class Stage(nn.Module):
  """One torchvision ``layerN``: blocks named "0", "1", ...; the first one carries the stride."""
  block: Any
  planes: int
  num_blocks: int
  stride: int
  groups: int
  base_width: int
  norm: Any
  conv: Any

  @nn.compact
  def __call__(self, x, train: bool):
    for i in range(self.num_blocks):
      x = self.block(self.planes, self.stride if i == 0 else 1, self.groups, self.base_width,
                     self.norm, self.conv, name=str(i))(x, train)
    return x


class ResNet(nn.Module):
  """torchvision-compatible ResNet returning ``(logits, features)``.

  Attributes:
    block: BasicBlock or Bottleneck.
    layers: blocks per stage.
    num_classes: head size; ``None`` builds no head (logits are ``None``): a feature extractor.
    groups, width_per_group: ResNeXt / wide-ResNet widths (torchvision's names).
    small_stem: 3×3 stride-1 stem without max-pool, for 32×32 inputs (CIFAR-style).
    dtype: compute dtype (params always float32).
    frozen_bn: regexes over BatchNorm module paths (e.g. ``"^(conv1|bn1|layer[1-3])"``) whose
      BatchNorm uses running statistics even when ``train=True``, so its ``batch_stats`` never change.
    dropout_rate: dropout on ``pre_logits`` before the head (needs a "dropout" rng in training).
    zero_init_residual: torchvision's option: last BN of each block starts at zero scale.
    base_planes: channels of the stem and the first stage (torchvision: 64; stages double it). A
      smaller value (e.g. 16) gives a narrow ResNet for CPU demos and distillation students; only
      64 matches torchvision's weights.
    bn_axis_name: the mapped axis BatchNorm statistics are averaged over (``pmap``'s); None
      under ``jit``, where every BatchNorm already sees the global batch.
    conv_impl: how convolutions compute ('xla' | 'matmul' | 'onednn' | 'auto', see
      ``make_conv``); the parameters and checkpoints are the same whichever is used. Any but
      'xla' also gives the stem's max-pool its faster CPU gradient (``pool.max_pool``).
  """
  block: Any
  layers: Sequence[int]
  num_classes: int | None = 1000
  groups: int = 1
  width_per_group: int = 64
  small_stem: bool = False
  dtype: Any = jnp.float32
  frozen_bn: tuple[str, ...] = ()
  dropout_rate: float = 0.0
  zero_init_residual: bool = False
  base_planes: int = 64
  bn_axis_name: str | None = None
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = BatchNormSpec(tuple(self.frozen_bn), self.dtype, self.zero_init_residual,
                         momentum=BN_MOMENTUM, epsilon=BN_EPSILON, axis_name=self.bn_axis_name)
    conv = make_conv(self.dtype, self.conv_impl)
    features = {}
    x = x.astype(self.dtype)
    if self.small_stem:
      x = nn.relu(norm(self, "bn1", conv(self.base_planes, 3, 1, 1, "conv1")(x), train))
    else:
      x = nn.relu(norm(self, "bn1", conv(self.base_planes, 7, 2, 3, "conv1")(x), train))
      # reduce_window and its native gradient under 'xla', else the CPU's taps (models/pool.py).
      x = pool.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)),
                        impl="xla" if self.conv_impl == "xla" else "auto")
    features["stem"] = x
    stage_planes = [self.base_planes * 2**i for i in range(4)]
    for i, (n, planes) in enumerate(zip(self.layers, stage_planes)):
      x = Stage(self.block, planes, n, 1 if i == 0 else 2, self.groups, self.width_per_group,
                norm, conv, name=f"layer{i + 1}")(x, train)
      features[f"layer{i + 1}"] = x
    x = jnp.mean(x, axis=(1, 2))
    features["pre_logits"] = x
    if self.num_classes is None:
      return None, features
    return classifier_head(x, num_classes=self.num_classes, dropout_rate=self.dropout_rate,
                           dtype=self.dtype, train=train), features


# name -> (block, blocks per stage, groups, width_per_group): torchvision's table.
ARCHS: dict[str, tuple[Any, tuple[int, ...], int, int]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 1, 64),
    "resnet34": (BasicBlock, (3, 4, 6, 3), 1, 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 1, 64),
    "resnet101": (Bottleneck, (3, 4, 23, 3), 1, 64),
    "resnet152": (Bottleneck, (3, 8, 36, 3), 1, 64),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": (Bottleneck, (3, 4, 23, 3), 1, 128),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": (Bottleneck, (3, 4, 23, 3), 32, 8),
    "resnext101_64x4d": (Bottleneck, (3, 4, 23, 3), 64, 4),
}


def build(arch: str, *, num_classes: int | None, dtype: Any, frozen_bn: tuple[str, ...],
          dropout_rate: float, bn_axis_name: str | None, small_stem: bool, base_planes: int,
          zero_init_residual: bool, conv_impl: str = "xla") -> ResNet:
  if conv_impl not in conv_lib.IMPLS:
    raise ValueError(f"model.conv_impl={conv_impl!r}; known: {', '.join(conv_lib.IMPLS)}")
  block, layers, groups, width = ARCHS[arch]
  return ResNet(block=block, layers=layers, num_classes=num_classes, groups=groups,
                width_per_group=width, small_stem=small_stem, dtype=resolve_dtype(dtype),
                frozen_bn=tuple(frozen_bn), dropout_rate=dropout_rate,
                zero_init_residual=zero_init_residual, base_planes=base_planes,
                bn_axis_name=bn_axis_name, conv_impl=conv_impl)


# torchvision's BatchNorm tensor names for flax's (collection, leaf).
_BN = {("params", "scale"): "weight", ("params", "bias"): "bias",
       ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def torchvision_key(col: str, path: tuple[str, ...]) -> str:
  """The torchvision state-dict key of a flax leaf: ``layer1/0/downsample_bn/mean`` (batch_stats)
  is ``layer1.0.downsample.1.running_mean``; kernels are ``weight``."""
  *mods, name = path
  leaf = mods[-1]
  if re.fullmatch(r"(downsample_)?bn\d*", leaf):
    name = _BN[(col, name)]
  elif name == "kernel":
    name = "weight"
  if leaf in ("downsample_conv", "downsample_bn"):
    mods = [*mods[:-1], "downsample", "0" if leaf == "downsample_conv" else "1"]
  return ".".join((*mods, name))


SPEC = ModelSpec(
    family="resnet",
    archs=tuple(ARCHS),
    build=build,
    options={"small_stem": False, "base_planes": 64, "zero_init_residual": False,
             "conv_impl": "xla"},
    # From the input up: the stem (conv1 + bn1), then torchvision's layer1 ... layer4.
    stages=(r"^(conv1|bn1)/", r"^layer1/", r"^layer2/", r"^layer3/", r"^layer4/"),
    head=r"^fc/",
    normalize={"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    reference_key=torchvision_key,
    execution_options=("conv_impl",),
    sample_size=64,
)

__all__ = ["ARCHS", "BasicBlock", "Bottleneck", "ResNet", "SPEC", "build", "torchvision_key"]
