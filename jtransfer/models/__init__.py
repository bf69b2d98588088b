"""Model families (ResNet, EfficientNet-Lite), built by name; every caller goes through here.

    from jtransfer import models
    model = models.create("resnet18", num_classes=10, small_stem=True)
    logits, features = model.apply(variables, images_nhwc, train=False)
    model = models.from_config(config.model, num_classes=10)     # what the trainer does
    models.get_spec("resnet50").stages                            # what freezing presets use
    weights.save(variables, dir, metadata=models.meta(config.model, num_classes=10))  # model.json
    model, meta = models.from_meta(dir)                           # rebuilds a saved model exactly

``FAMILIES`` registers each family's ``ModelSpec`` (``models/spec.py``); ``ARCHS`` lists every
architecture. To add a family: a file here with its module and ``SPEC``, one line in ``FAMILIES``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from jtransfer.models import efficientnet_lite, resnet
from jtransfer.models.layers import resolve_dtype
from jtransfer.models.spec import ModelSpec

FAMILIES: dict[str, ModelSpec] = {
    resnet.SPEC.family: resnet.SPEC,
    efficientnet_lite.SPEC.family: efficientnet_lite.SPEC,
}

ARCHS: tuple[str, ...] = tuple(a for spec in FAMILIES.values() for a in spec.archs)

# The JSON beside saved weights that says how to rebuild their model (arch, head, options, classes).
MODEL_JSON = "model.json"


def get_spec(arch: str) -> ModelSpec:
  """The spec of the family that builds ``arch``."""
  for spec in FAMILIES.values():
    if arch in spec.archs:
      return spec
  raise ValueError(f"Unknown arch {arch!r}; known: {', '.join(ARCHS)}")


def create(arch: str, *, num_classes: int | None = 1000, dtype: Any = "float32",
           frozen_bn: Sequence[str] = (), dropout_rate: float = 0.0,
           bn_axis_name: str | None = None, **options: Any):
  """Builds ``arch`` as a linen Module returning ``(logits, features)``.

  Common options: ``num_classes`` (None: a feature extractor), ``dtype`` (a jnp dtype or
  'float32'/'bfloat16'; params stay float32), ``frozen_bn`` (regexes of BatchNorms that use their
  running statistics in training), ``dropout_rate`` (before the head), ``bn_axis_name`` (under
  ``pmap``: BatchNorm statistics over this axis). ``options`` are the family's own (ResNet:
  ``small_stem``, ``base_planes``, ``zero_init_residual``); an unknown one is an error.
  """
  return get_spec(arch).create(arch, num_classes=num_classes, dtype=dtype,
                               frozen_bn=tuple(frozen_bn), dropout_rate=dropout_rate,
                               bn_axis_name=bn_axis_name, options=options)


def family_options() -> dict[str, Any]:
  """Every family's options with their defaults: the family fields of ``config.model``."""
  return {k: v for spec in FAMILIES.values() for k, v in spec.options.items()}


def options_of(model_cfg: Any) -> dict:
  """The family options of ``config.model`` for its arch, defaults filled in.

  A field that belongs to another family must keep its default: ``small_stem=True`` on an
  EfficientNet is an error naming the key, not silently ignored.
  """
  spec = get_spec(model_cfg.arch)
  out = {}
  for other in FAMILIES.values():
    for key, default in other.options.items():
      if key not in model_cfg:
        continue
      if key in spec.options:
        out[key] = model_cfg[key]
      elif model_cfg[key] != default:
        raise ValueError(f"model.{key}={model_cfg[key]!r} is a {other.family} option; "
                         f"{model_cfg.arch} ({spec.family}) does not take it")
  return spec.check_options(out, where="model")


def from_config(model_cfg: Any, num_classes: int | None, *, frozen_bn: Sequence[str] = (),
                bn_axis_name: str | None = None):
  """The model of ``config.model`` with a ``num_classes`` head (None: no head)."""
  return create(model_cfg.arch, num_classes=num_classes, dtype=model_cfg.dtype,
                frozen_bn=frozen_bn, dropout_rate=model_cfg.dropout_rate,
                bn_axis_name=bn_axis_name, **options_of(model_cfg))


def meta(model_cfg: Any, *, num_classes: int | None, class_names: Sequence[str] = (),
         **extra: Any) -> dict:
  """What ``model.json`` records: everything needed to rebuild the module, and the classes."""
  return {"arch": model_cfg.arch, "num_classes": None if num_classes is None else int(num_classes),
          "options": options_of(model_cfg), "dtype": model_cfg.dtype,
          "class_names": list(class_names), **extra}


def write_meta(directory: str, meta_: Mapping[str, Any]) -> None:
  """Writes ``model.json`` into ``directory`` (``weights.save`` calls it inside the new export dir
  before the dir takes its place, so the file is never seen half-written)."""
  with open(os.path.join(directory, MODEL_JSON), "w") as f:
    json.dump(dict(meta_), f, indent=1)


def read_meta(directory: str) -> dict | None:
  """``model.json`` of ``directory``, or None when there is none."""
  path = os.path.join(directory, MODEL_JSON)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    meta_ = json.load(f)
  if "options" not in meta_:  # written before options were recorded: ResNet fields at top level
    meta_["options"] = {k: meta_[k] for k in ("small_stem", "base_planes") if k in meta_}
  return meta_


def from_meta(meta_: Mapping[str, Any], *, dtype: Any = None, num_classes: Any = "meta",
              **kwargs: Any):
  """The module ``model.json`` describes (``num_classes='meta'``: its head; None: no head)."""
  return create(meta_["arch"],
                num_classes=meta_["num_classes"] if num_classes == "meta" else num_classes,
                dtype=dtype or meta_.get("dtype", "float32"), **kwargs,
                **dict(meta_.get("options", {})))


__all__ = ["ARCHS", "FAMILIES", "MODEL_JSON", "ModelSpec", "create", "from_config", "from_meta",
           "family_options", "get_spec", "meta", "options_of", "read_meta", "resolve_dtype", "write_meta"]
