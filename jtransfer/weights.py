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

import os
import re
from typing import Any, Sequence

from flax import traverse_util
import jax
import numpy as np

from jtransfer import models

COLLECTIONS = ("params", "batch_stats")
PKG_PREFIX = "pkg:"


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
         overwrite: bool = False) -> str:
  """Writes ``{'params', 'batch_stats'}`` as an Orbax checkpoint (+ the model's ``model.json``,
  ``metadata``, written by ``models.write_meta``), atomically, with ``workdir.atomic_write_dir``: everything is written into a
  fresh sibling dir that takes ``directory``'s place in one step, so a reader, or a kill at any
  moment, finds a whole weights dir (the old one or the new one), never a half-written one or none.

  ``overwrite=False``: an existing ``directory`` is an error; it becomes a plain dir.
  ``overwrite=True``: ``directory`` becomes a symlink to ``.<name>-<hex>`` beside it, replaced by
  the next save in one ``os.replace`` (``load`` and Orbax read through it); the old version is
  removed once the new one is in place. Leftovers of an interrupted save of ``directory`` are
  removed first. Only the calling process writes (Orbax is told it is on its own): in a multi-host
  run, call it from one process.
  """
  import orbax.checkpoint as ocp

  from jtransfer import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  tree = {col: jax.tree.map(np.asarray, variables[col]) for col in COLLECTIONS if col in variables}

  def fill(staging: str) -> None:
    me = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    with ocp.StandardCheckpointer(multiprocessing_options=local) as ckptr:
      ckptr.save(os.path.join(staging, "variables"), tree)
    if metadata is not None:
      models.write_meta(staging, metadata)

  return workdir_lib.atomic_write_dir(directory, fill, overwrite=overwrite)


def resolve(path: str | os.PathLike) -> str:
  """``path``, or for ``pkg:NAME`` the checkpoint file an installed package ships
  (``pkg:efficientnet_lite0``; see ``models.pretrained``)."""
  path = os.fspath(path)
  if path.startswith(PKG_PREFIX):
    from jtransfer.models import pretrained  # pylint: disable=g-import-not-at-top
    return pretrained.resolve(path)
  return path


def load(path: str | os.PathLike, *, arch: str | None = None, **convert_kwargs) -> dict[str, Any]:
  """Loads variables from an Orbax dir written by ``save``, a PyTorch ``.pth``/``.safetensors``
  state dict of ``arch``, or ``pkg:NAME`` (weights shipped in an installed package)."""
  path = resolve(path)
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
