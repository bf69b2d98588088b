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

import dataclasses
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jtransfer.adapt.grl import DomainHead, gradient_reversal

# torchvision's BatchNorm2d: momentum 0.1 (flax counts the other way: 0.9) and eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# Kaiming-normal (fan_out, relu) as torchvision initialises its convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _head_init(num_features: int):
  # torchvision's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
  bound = 1.0 / float(num_features) ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


@dataclasses.dataclass(frozen=True)
class BatchNormSpec:
  """How every BatchNorm of a ResNet is built: torchvision's constants, and which ones are frozen.

  ``frozen`` holds regexes over the BatchNorm's '/'-joined module path (``layer2/0/bn1``): a frozen
  BatchNorm normalises with its running statistics even in training, so its ``batch_stats`` stay
  bitwise unchanged and its backward pass does not depend on batch statistics.
  """
  frozen: tuple[str, ...] = ()
  dtype: Any = jnp.float32
  zero_init_last: bool = False

  def __call__(self, parent: nn.Module, name: str, x, train: bool, last: bool = False):
    path = "/".join((*parent.scope.path, name))
    frozen = any(re.search(p, path) for p in self.frozen)
    zero = last and self.zero_init_last
    return nn.BatchNorm(
        use_running_average=not train or frozen, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        dtype=self.dtype, param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero else nn.initializers.ones,
        parent=parent, name=name)(x)


class BasicBlock(nn.Module):
  """Two 3×3 convolutions (ResNet-18/34). ``groups`` and ``base_width`` must keep their defaults."""
  planes: int
  stride: int = 1
  groups: int = 1
  base_width: int = 64
  norm: Any = None
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, p, name: nn.Conv(
        f, (k, k), (s, s), padding=[(p, p), (p, p)], use_bias=False, kernel_init=conv_init,
        dtype=self.dtype, param_dtype=jnp.float32, name=name)
    y = conv(self.planes, 3, self.stride, 1, "conv1")(x)
    y = nn.relu(self.norm(self, "bn1", y, train))
    y = conv(self.planes, 3, 1, 1, "conv2")(y)
    y = self.norm(self, "bn2", y, train, last=True)
    if self.stride != 1 or x.shape[-1] != self.planes:
      x = conv(self.planes, 1, self.stride, 0, "downsample_conv")(x)
      x = self.norm(self, "downsample_bn", x, train)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1×1 → 3×3 (stride here: v1.5) → 1×1 ×4, with grouped 3×3 for ResNeXt."""
  planes: int
  stride: int = 1
  groups: int = 1
  base_width: int = 64
  norm: Any = None
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    width = int(self.planes * (self.base_width / 64.0)) * self.groups
    out = self.planes * self.expansion
    conv = lambda f, k, s, p, name, g=1: nn.Conv(
        f, (k, k), (s, s), padding=[(p, p), (p, p)], use_bias=False, feature_group_count=g,
        kernel_init=conv_init, dtype=self.dtype, param_dtype=jnp.float32, name=name)
    y = conv(width, 1, 1, 0, "conv1")(x)
    y = nn.relu(self.norm(self, "bn1", y, train))
    y = conv(width, 3, self.stride, 1, "conv2", self.groups)(y)
    y = nn.relu(self.norm(self, "bn2", y, train))
    y = conv(out, 1, 1, 0, "conv3")(y)
    y = self.norm(self, "bn3", y, train, last=True)
    if self.stride != 1 or x.shape[-1] != out:
      x = conv(out, 1, self.stride, 0, "downsample_conv")(x)
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
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    for i in range(self.num_blocks):
      x = self.block(self.planes, self.stride if i == 0 else 1, self.groups, self.base_width,
                     self.norm, self.dtype, name=str(i))(x, train)
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
    domain_head: hidden widths of a domain classifier (DANN, Ganin & Lempitsky 2015) fed from
      ``pre_logits`` through a gradient reversal layer of strength ``grl_lambda``; its output is
      ``features["domain_logits"]`` ([N], source vs target). Empty (default): no domain head.
    base_planes: channels of the stem and the first stage (torchvision: 64; stages double it). A
      smaller value (e.g. 16) gives a narrow ResNet for CPU demos and distillation students; only
      64 matches torchvision's weights.
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
  domain_head: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x, train: bool = False, grl_lambda=1.0):
    norm = BatchNormSpec(tuple(self.frozen_bn), self.dtype, self.zero_init_residual)
    features = {}
    x = x.astype(self.dtype)
    if self.small_stem:
      x = nn.Conv(self.base_planes, (3, 3), (1, 1), padding=[(1, 1), (1, 1)], use_bias=False, kernel_init=conv_init,
                  dtype=self.dtype, param_dtype=jnp.float32, name="conv1")(x)
      x = nn.relu(norm(self, "bn1", x, train))
    else:
      x = nn.Conv(self.base_planes, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False, kernel_init=conv_init,
                  dtype=self.dtype, param_dtype=jnp.float32, name="conv1")(x)
      x = nn.relu(norm(self, "bn1", x, train))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
    features["stem"] = x
    stage_planes = [self.base_planes * 2**i for i in range(4)]
    for i, (n, planes) in enumerate(zip(self.layers, stage_planes)):
      x = Stage(self.block, planes, n, 1 if i == 0 else 2, self.groups, self.width_per_group,
                norm, self.dtype, name=f"layer{i + 1}")(x, train)
      features[f"layer{i + 1}"] = x
    x = jnp.mean(x, axis=(1, 2))
    features["pre_logits"] = x
    if self.domain_head:
      reversed_ = gradient_reversal(x.astype(jnp.float32), grl_lambda)
      features["domain_logits"] = DomainHead(tuple(self.domain_head), name="domain_head")(reversed_)
    if self.num_classes is None:
      return None, features
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      kernel_init=_head_init(x.shape[-1]), bias_init=_head_init(x.shape[-1]),
                      name="fc")(x)
    return logits.astype(jnp.float32), features
