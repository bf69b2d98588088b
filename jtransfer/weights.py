"""Loading, merging and saving model variables — strictly.

    variables = weights.load("workdirs/r50")                      # an Orbax dir from `python -m jtransfer.convert`
    variables = weights.load("resnet50.safetensors", arch="resnet50")
    init = model.init(key, images)                                 # new head: num_classes=10
    merged, report = weights.merge(init, variables, skip=(r"^fc/",))
    weights.save(merged, "out/dir")

``merge`` is the one way a pretrained backbone enters a model with another head: every leaf must be
present with the same shape unless its path matches a ``skip`` pattern, in which case the freshly
initialised leaf is kept and the report says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any, Sequence

import jax
import numpy as np
from flax import traverse_util

COLLECTIONS = ("params", "batch_stats")
# The JSON beside exported variables that says what model they belong to (arch, head, stem, classes).
MODEL_JSON = "model.json"


class WeightsMismatchError(ValueError):
  """Pretrained variables that do not fit a model: names every offending leaf."""


def _flat(variables: Any) -> dict[str, Any]:
  out = {}
  for col in COLLECTIONS:
    for path, leaf in traverse_util.flatten_dict(dict(variables.get(col, {}))).items():
      out["/".join((col, *path))] = leaf
  return out


def _unflat(flat: dict[str, Any]) -> dict[str, Any]:
  out = {col: {} for col in COLLECTIONS}
  for key, leaf in flat.items():
    col, *path = key.split("/")
    out[col][tuple(path)] = leaf
  return {col: traverse_util.unflatten_dict(tree) for col, tree in out.items() if tree}


def merge(init_variables: Any, pretrained: Any, *, skip: Sequence[str] = ()) -> tuple[dict, str]:
  """Takes every leaf of ``init_variables`` from ``pretrained``, except paths matching ``skip``.

  Paths are '/'-joined without the collection (``fc/kernel``, ``layer1/0/bn1/mean``). Raises
  ``WeightsMismatchError`` naming each leaf that is missing, unexpected or mis-shaped and not
  skipped. Returns ``(variables, report)``; the report lists what was skipped and why.
  """
  target, source = _flat(init_variables), _flat(pretrained)
  strip = lambda k: k.split("/", 1)[1]
  skipped = lambda k: any(re.search(p, strip(k)) for p in skip)
  missing, unexpected, misshaped, report = [], [], [], []
  merged = {}
  for key, leaf in target.items():
    if skipped(key):
      why = ("absent in pretrained" if key not in source else
             f"shape {tuple(np.shape(source[key]))} -> {tuple(np.shape(leaf))}"
             if np.shape(source[key]) != np.shape(leaf) else "present, re-initialised")
      report.append(f"kept fresh init for {key} (matches skip pattern; {why})")
      merged[key] = leaf
    elif key not in source:
      missing.append(key)
    elif np.shape(source[key]) != np.shape(leaf):
      misshaped.append(f"{key}: pretrained {tuple(np.shape(source[key]))} vs model {tuple(np.shape(leaf))}")
    else:
      merged[key] = source[key]
  for key in source:
    if key not in target and not skipped(key):
      unexpected.append(key)
    elif key not in target:
      report.append(f"dropped pretrained {key} (matches skip pattern; not in model)")
  if missing or unexpected or misshaped:
    lines = ["Pretrained weights do not fit the model (add a skip pattern only for leaves you mean to re-initialise):"]
    for title, items in (("mis-shaped", misshaped), ("missing from pretrained", missing),
                         ("unexpected in pretrained", unexpected)):
      if items:
        shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
        lines.append(f"  {len(items)} {title}: " + "; ".join(shown))
    raise WeightsMismatchError("\n".join(lines))
  return _unflat(merged), "\n".join(report) or "all leaves loaded from pretrained"


def save(variables: Any, directory: str | os.PathLike, *, metadata: dict[str, Any] | None = None,
         metadata_name: str = MODEL_JSON, overwrite: bool = False) -> str:
  """Writes ``{'params', 'batch_stats'}`` as an Orbax checkpoint (+ an optional JSON ``metadata``
  file beside it), atomically: everything goes into a temp dir that is renamed into place, so a
  reader never sees a half-written weights dir.

  Only the calling process writes (Orbax is told it is on its own): in a multi-host run, call it
  from one process. ``overwrite=True`` replaces an existing dir (the old one is removed only after
  the new one is in place); otherwise an existing dir is an error.
  """
  import orbax.checkpoint as ocp
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and not overwrite:
    raise FileExistsError(f"{directory} exists; refusing to overwrite weights")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-weights-", dir=parent)
  try:
    tree = {col: jax.tree.map(np.asarray, variables[col]) for col in COLLECTIONS if col in variables}
    me = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    with ocp.StandardCheckpointer(multiprocessing_options=local) as ckptr:
      ckptr.save(os.path.join(tmp, "variables"), tree)
    if metadata is not None:
      with open(os.path.join(tmp, metadata_name), "w") as f:
        json.dump(metadata, f, indent=1)
    old = None
    if os.path.exists(directory):
      old = tempfile.mkdtemp(prefix=".old-weights-", dir=parent)
      os.rename(directory, os.path.join(old, "d"))
    os.rename(tmp, directory)
    if old:
      shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory


def load(path: str | os.PathLike, *, arch: str | None = None, **convert_kwargs) -> dict[str, Any]:
  """Loads variables from an Orbax dir written by ``save`` or a torchvision ``.pth``/``.safetensors``."""
  path = os.fspath(path)
  if os.path.isdir(path):
    import orbax.checkpoint as ocp
    item = os.path.join(os.path.abspath(path), "variables")
    if not os.path.isdir(item):
      raise FileNotFoundError(f"{path} is not a jtransfer weights dir (no 'variables' inside)")
    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore(item)
    return {col: jax.tree.map(np.asarray, restored[col]) for col in COLLECTIONS if col in restored}
  if arch is None:
    raise ValueError(f"Loading {path} needs arch= (the file is a raw state dict)")
  from jtransfer.convert import from_torchvision
  return from_torchvision(path, arch, **convert_kwargs)
