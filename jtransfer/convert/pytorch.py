"""PyTorch state dicts ↔ Flax variables, strictly, for every model family.

    from jtransfer import convert
    variables = convert.from_torchvision("resnet50.pth", "resnet50")        # or .safetensors
    variables = convert.from_torchvision(sd, "efficientnet_lite0")          # any registered family
    state_dict = convert.to_torchvision(variables, "resnet50")              # back, reference names

Each family's ``ModelSpec.reference_key`` names the reference tensor of every Flax leaf; this module
only reads files, inverts that naming over the model's expected shapes and transposes layouts
(conv OIHW ↔ HWIO, linear (out, in) ↔ (in, out)). ``.pth`` files are read only with
``torch.load(..., weights_only=True)`` (no arbitrary unpickling); ``.safetensors`` needs no torch.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

from flax import traverse_util
import jax
import numpy as np

from jtransfer import models


class ConversionError(ValueError):
  """A state dict that does not fit the architecture: lists every missing/unexpected/mis-shaped key."""


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a ``.pth``/``.pt`` (weights_only) or ``.safetensors`` file into numpy arrays."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No weights file at {path}")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    try:
      return dict(load_file(path))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers.
      raise ConversionError(f"Could not read {path} as safetensors: {e}") from e
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"Reading {path} needs torch; install it or convert the file to .safetensors") from e
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise ConversionError(f"Could not read {path} with torch.load(weights_only=True): {e}") from e
  if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
    sd = sd["state_dict"]  # common training-checkpoint wrapping
  if not isinstance(sd, Mapping):
    raise ConversionError(f"{path} holds a {type(sd).__name__}, not a state dict")
  bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
  if bad:
    raise ConversionError(f"{path}: values of {bad[:5]} are not tensors (a state dict maps names "
                          "to tensors; is this a training checkpoint? pass its model state dict)")
  return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
          for k, v in sd.items()}


def _to_flax(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  if value.ndim == 4:  # conv OIHW → HWIO (a depthwise (C, 1, kh, kw) becomes (kh, kw, 1, C))
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2 and len(shape) == 2:  # linear (out, in) → (in, out)
    return value.T
  return value


def _to_reference(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  if value.ndim == 2:
    return value.T
  return value


def _expected(arch: str, num_classes: int | None, options: Mapping[str, Any]) -> dict:
  """``{(collection, *path): shape}`` of ``arch``'s variables."""
  return dict(_expected_cached(arch, num_classes, tuple(sorted(options.items()))))


@functools.lru_cache(maxsize=32)  # tracing the init of a deep model takes ~1 s; shapes never change
def _expected_cached(arch: str, num_classes: int | None, options: tuple) -> dict:
  spec = models.get_spec(arch)
  model = models.create(arch, num_classes=num_classes, **dict(options))
  size = spec.sample_size
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, size, size, 3), np.float32)))
  return {(col, *path): leaf.shape
          for col in ("params", "batch_stats") if col in shapes
          for path, leaf in traverse_util.flatten_dict(shapes[col]).items()}


def _head_size(sd: Mapping[str, np.ndarray], arch: str) -> int | None:
  """The head size of the file: the reference tensor of the family's head bias, when present."""
  spec = models.get_spec(arch)
  key = spec.reference_key("params", ("fc", "bias"))
  return int(np.shape(sd[key])[0]) if key in sd else None


def from_torchvision(path_or_state_dict: str | os.PathLike | Mapping[str, Any], arch: str, *,
                     num_classes: int | None = None, **options: Any) -> dict[str, Any]:
  """Converts a PyTorch state dict of ``arch`` (torchvision/timm ResNets, the EfficientNet-Lite
  reference) into ``{'params', 'batch_stats'}``.

  ``num_classes`` defaults to the head found in the file (None when it has none); ``options`` are
  the family's (ResNet: ``small_stem``, ...). Raises ``ConversionError`` listing every missing,
  unexpected and mis-shaped key at once.
  """
  if isinstance(path_or_state_dict, (str, os.PathLike)):
    source = os.fspath(path_or_state_dict)
    sd = read_state_dict(source)
  else:
    source = "state dict"
    sd = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
          for k, v in path_or_state_dict.items()}
  spec = models.get_spec(arch)
  if num_classes is None:
    num_classes = _head_size(sd, arch)
  expected = _expected(arch, num_classes, options)
  by_key = {spec.reference_key(col, tuple(path)): (col, *path) for col, *path in expected}
  ignored = lambda k: any(k.endswith(s) for s in spec.reference_ignore)
  got, misshaped = {}, []
  unexpected = [k for k in sd if k not in by_key and not ignored(k)]
  for key, full in by_key.items():
    if key not in sd:
      continue
    value = _to_flax(np.asarray(sd[key], np.float32), expected[full])
    if value.shape != tuple(expected[full]):
      misshaped.append(f"{key}: file {tuple(value.shape)} vs {arch} {tuple(expected[full])}")
      continue
    got[full] = value
  missing = [key for key in by_key if key not in sd]  # named as the file would name them
  if unexpected or misshaped or missing:
    opts = ", ".join(f"{k}={v}" for k, v in options.items())
    lines = [f"{source} does not fit {arch} (num_classes={num_classes}{', ' + opts if opts else ''}):"]
    for title, items in (("mis-shaped", misshaped), ("unexpected", unexpected), ("missing", missing)):
      if items:
        shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
        lines.append(f"  {len(items)} {title}: " + "; ".join(shown))
    raise ConversionError("\n".join(lines))
  out = {"params": {}, "batch_stats": {}}
  for (col, *path), value in got.items():
    out[col][tuple(path)] = value
  return {col: traverse_util.unflatten_dict(tree) for col, tree in out.items() if tree}


def to_torchvision(variables: Mapping[str, Any], arch: str) -> dict[str, np.ndarray]:
  """``{'params', 'batch_stats'}`` → the reference framework's state dict (numpy arrays), for a
  strict ``load_state_dict``. BatchNorm ``num_batches_tracked`` counters are written as 0."""
  spec = models.get_spec(arch)
  out = {}
  for col in ("params", "batch_stats"):
    for path, value in traverse_util.flatten_dict(dict(variables.get(col, {}))).items():
      key = spec.reference_key(col, tuple(path))
      out[key] = np.ascontiguousarray(_to_reference(np.asarray(value, np.float32)))
      if col == "batch_stats" and path[-1] == "mean":
        out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
  return out


__all__ = ["ConversionError", "from_torchvision", "read_state_dict", "to_torchvision"]
