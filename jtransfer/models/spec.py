"""What the rest of jtransfer knows about a model family: one ``ModelSpec`` per family.

    spec = models.get_spec("resnet50")                 # the family that owns the arch
    model = spec.create("resnet50", num_classes=10, options={"small_stem": True})
    spec.stages, spec.head                             # what freezing presets count and train
    spec.normalize                                     # the `normalize` pp op the weights expect
    spec.reference_key("params", ("layer1", "0", "conv1", "kernel"))   # 'layer1.0.conv1.weight'

A family file (``models/resnet.py``, ``models/efficientnet_lite.py``) holds the linen module, its
architectures and one ``SPEC``; ``models/__init__.py`` registers it in one line. Nothing outside
``models/`` needs to know a family's layer names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn

# The builder every family provides: build(arch, *, num_classes, dtype, frozen_bn, dropout_rate,
# bn_axis_name, **options) -> nn.Module returning (logits, features).
Builder = Callable[..., nn.Module]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model family.

  Attributes:
    family: its name ('resnet', 'efficientnet_lite').
    archs: the architecture names it builds.
    build: see ``Builder``; every family takes the common options (num_classes, dtype, frozen_bn,
      dropout_rate, bn_axis_name) plus its own ``options``.
    options: the family's own options with their defaults (ResNet: small_stem, base_planes, ...).
    execution_options: those of ``options`` that change how the model computes, not what (the
      convolution formulation): a run may resume or share its weights under another value
      (their role in ``train/fields.py``); every other option changes the result.
      ``model.json`` records them, so a saved model is rebuilt without guessing.
    stages: regexes over '/'-joined parameter paths, from the input up; the first is the stem.
      Freezing presets count stages from the head down.
    head: regex of the classification head's parameters (re-initialised for a new task).
    normalize: keyword arguments of the ``normalize`` preprocessing op (``mean``, ``std`` of
      ``x / 255``) that the family's reference weights expect.
    reference_key: ``(collection, flax path) -> state-dict key`` of the reference framework
      (torchvision, the EfficientNet-Lite reference), or None for leaves it has no counterpart
      for; the converter inverts it, and export uses it as it is.
    reference_ignore: state-dict key suffixes with no Flax counterpart (BatchNorm counters).
    sample_size: an input side the family accepts, used to compute parameter shapes.
    native_size: the input side each arch's reference weights were trained at (``predict``'s
      default for a weights dir); an arch not listed uses 224.
  """
  family: str
  archs: tuple[str, ...]
  build: Builder
  options: Mapping[str, Any]
  stages: tuple[str, ...]
  head: str
  normalize: Mapping[str, Any]
  reference_key: Callable[[str, tuple[str, ...]], str | None]
  reference_ignore: tuple[str, ...] = ("num_batches_tracked",)
  sample_size: int = 64
  native_size: Mapping[str, int] = dataclasses.field(default_factory=dict)
  execution_options: tuple[str, ...] = ()

  @property
  def stem(self) -> str:
    return self.stages[0]

  def check_options(self, options: Mapping[str, Any], where: str = "model") -> dict:
    """The family's options, defaults filled in; an option it does not have is an error."""
    unknown = sorted(set(options) - set(self.options))
    if unknown:
      raise ValueError(f"{where}: {self.family} models take options {sorted(self.options)}; "
                       f"got unknown {unknown}")
    return {**self.options, **options}

  def create(self, arch: str, *, num_classes: int | None = 1000, dtype: Any = "float32",
             frozen_bn: tuple[str, ...] = (), dropout_rate: float = 0.0,
             bn_axis_name: str | None = None, options: Mapping[str, Any] | None = None
             ) -> nn.Module:
    if arch not in self.archs:
      raise ValueError(f"Unknown {self.family} arch {arch!r}; known: {', '.join(self.archs)}")
    return self.build(arch, num_classes=num_classes, dtype=dtype, frozen_bn=tuple(frozen_bn),
                      dropout_rate=dropout_rate, bn_axis_name=bn_axis_name,
                      **self.check_options(options or {}))
