"""torchvision / timm ResNet state dicts → Flax variables, strictly.

    from jtransfer import convert
    variables = convert.from_torchvision("resnet50.pth", "resnet50")        # or .safetensors
    logits, features = models.create("resnet50").apply(variables, images_nhwc)

timm's ResNets use torchvision's key names, so both load through here. ``.pth`` files are read only
with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling); ``.safetensors`` needs no torch.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import numpy as np
from flax import traverse_util

from jtransfer import models

# torchvision's BN tensor → (collection, flax leaf name).
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


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
  return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
          for k, v in sd.items()}


def _flax_path(key: str) -> tuple[str, tuple[str, ...]] | None:
  """Maps one torchvision key to (collection, flax path); None for keys with no Flax counterpart."""
  parts = key.split(".")
  if parts[-1] == "num_batches_tracked":
    return None
  name = parts[-1]
  mods = parts[:-1]
  # layerN.i.downsample.{0,1} → layerN/i/downsample_{conv,bn}
  if len(mods) >= 2 and mods[-2] == "downsample":
    mods = mods[:-2] + ["downsample_conv" if mods[-1] == "0" else "downsample_bn"]
  leaf = mods[-1] if mods else ""
  if leaf == "fc":
    return "params", (*mods, {"weight": "kernel", "bias": "bias"}.get(name, name))
  if re.fullmatch(r"(downsample_)?bn\d*", leaf):
    col, flax_name = _BN.get(name, ("params", name))
    return col, (*mods, flax_name)
  if re.fullmatch(r"(downsample_)?conv\d*", leaf) and name == "weight":
    return "params", (*mods, "kernel")
  return "params", (*mods, name)  # unknown: reported as unexpected below


def _torch_key(col: str, path: tuple[str, ...]) -> str:
  """Inverse of ``_flax_path``: (collection, flax path) → torchvision key."""
  *mods, name = path
  leaf = mods[-1]
  if leaf == "fc":
    name = {"kernel": "weight"}.get(name, name)
  elif re.fullmatch(r"(downsample_)?bn\d*", leaf):
    name = {flax: torch for torch, flax in _BN.items()}[(col, name)]
  elif name == "kernel":
    name = "weight"
  if leaf in ("downsample_conv", "downsample_bn"):
    mods = [*mods[:-1], "downsample", "0" if leaf == "downsample_conv" else "1"]
  return ".".join((*mods, name))


def to_torchvision(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """``{'params', 'batch_stats'}`` → a torchvision state dict of numpy arrays (for ``load_state_dict``).

  BatchNorm ``num_batches_tracked`` counters are written as 0, as torchvision's strict loading expects them.
  """
  out = {}
  for col in ("params", "batch_stats"):
    for path, value in traverse_util.flatten_dict(dict(variables[col])).items():
      value = np.asarray(value, np.float32)
      if value.ndim == 4:
        value = np.transpose(value, (3, 2, 0, 1))  # HWIO → OIHW
      elif value.ndim == 2:
        value = value.T
      key = _torch_key(col, path)
      out[key] = np.ascontiguousarray(value)
      if col == "batch_stats" and path[-1] == "mean":
        out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
  return out


def _to_flax(name: str, value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:  # conv OIHW → HWIO
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2 and name == "kernel":  # linear (out, in) → (in, out)
    return value.T
  return value


def from_torchvision(path_or_state_dict: str | os.PathLike | Mapping[str, Any], arch: str, *,
                     num_classes: int | None = None, small_stem: bool = False) -> dict[str, Any]:
  """Converts a torchvision/timm ResNet state dict for ``arch`` into ``{'params', 'batch_stats'}``.

  ``num_classes`` defaults to the head found in the file (None when it has none). Raises
  ``ConversionError`` listing every missing, unexpected and mis-shaped key at once.
  """
  if isinstance(path_or_state_dict, (str, os.PathLike)):
    source = os.fspath(path_or_state_dict)
    sd = read_state_dict(source)
  else:
    source = "state dict"
    sd = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
          for k, v in path_or_state_dict.items()}
  if num_classes is None and "fc.weight" in sd:
    num_classes = int(sd["fc.weight"].shape[0])
  model = models.create(arch, num_classes=num_classes, small_stem=small_stem)
  size = 32 if small_stem else 64
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, size, size, 3), np.float32)))
  expected = {(col, *path): leaf.shape
              for col in ("params", "batch_stats")
              for path, leaf in traverse_util.flatten_dict(shapes[col]).items()}

  got, unexpected, misshaped, seen = {}, [], [], set()
  for key, value in sd.items():
    mapped = _flax_path(key)
    if mapped is None:
      continue
    col, path = mapped
    full = (col, *path)
    if full not in expected:
      unexpected.append(key)
      continue
    seen.add(full)
    value = _to_flax(path[-1], np.asarray(value, np.float32))
    if value.shape != tuple(expected[full]):
      misshaped.append(f"{key}: file {tuple(value.shape)} vs {arch} {tuple(expected[full])}")
      continue
    got[full] = value
  missing = ["/".join(k) for k in expected if k not in seen]
  if unexpected or misshaped or missing:
    lines = [f"{source} does not fit {arch} (num_classes={num_classes}, small_stem={small_stem}):"]
    for title, items in (("mis-shaped", misshaped), ("unexpected", unexpected), ("missing", missing)):
      if items:
        shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
        lines.append(f"  {len(items)} {title}: " + "; ".join(shown))
    raise ConversionError("\n".join(lines))
  out = {"params": {}, "batch_stats": {}}
  for (col, *path), value in got.items():
    out[col][tuple(path)] = value
  return {col: traverse_util.unflatten_dict(tree) for col, tree in out.items()}
