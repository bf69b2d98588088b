"""The ResNet family, built by name.

    from jtransfer import models
    model = models.create("resnet18", num_classes=10, small_stem=True)
    logits, features = model.apply(variables, images_nhwc, train=False)

``ARCHS`` lists every architecture; ``create`` is the one way to build one.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jtransfer.models.resnet import BasicBlock, BatchNormSpec, Bottleneck, ResNet

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

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create(arch: str, *, num_classes: int | None = 1000, small_stem: bool = False,
           dtype: Any = jnp.float32, frozen_bn: tuple[str, ...] = (), dropout_rate: float = 0.0,
           zero_init_residual: bool = False, base_planes: int = 64,
           domain_head: tuple[int, ...] = ()) -> ResNet:
  """Builds ``arch`` (a key of ``ARCHS``) as a linen Module; see ``ResNet`` for the options.

  ``dtype`` may be a jnp dtype or its name ("float32", "bfloat16").
  """
  if arch not in ARCHS:
    raise ValueError(f"Unknown arch {arch!r}; known: {', '.join(ARCHS)}")
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f"Unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    dtype = DTYPES[dtype]
  block, layers, groups, width = ARCHS[arch]
  return ResNet(block=block, layers=layers, num_classes=num_classes, groups=groups,
                width_per_group=width, small_stem=small_stem, dtype=dtype,
                frozen_bn=tuple(frozen_bn), dropout_rate=dropout_rate,
                zero_init_residual=zero_init_residual, base_planes=base_planes,
                domain_head=tuple(domain_head))


__all__ = ["ARCHS", "BasicBlock", "BatchNormSpec", "Bottleneck", "ResNet", "create"]
