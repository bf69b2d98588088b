"""One config per workdir: ``identity.json`` records the fields that change a run's result.

    wd.check_identity("workdirs/run", config)     # another config: WorkdirMismatchError
    wd.write_identity("workdirs/run", config)

Which fields count is their role in ``train/fields.py`` (result and input).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

from absl import logging

from jtransfer.train import fields as fields_lib
from jtransfer.workdir.atomic import _json_default, atomic_write_json
from jtransfer.workdir.rundir import RunDir

IDENTITY_FILE = "identity.json"


class WorkdirMismatchError(ValueError):
  """The workdir holds a run of another config; the message lists every differing field."""

  def __init__(self, message: str, diffs: Mapping[str, tuple[Any, Any]]):
    super().__init__(message)
    self.diffs = dict(diffs)


_ABSENT = "(absent)"


def _plain(config: Any) -> Any:
  """``config`` as the JSON values config.json holds, so a ConfigDict and its config.json
  fingerprint alike (tuples as lists, numpy as numbers)."""
  if hasattr(config, "to_json_best_effort"):  # ml_collections ConfigDict / FrozenConfigDict
    return json.loads(config.to_json_best_effort(sort_keys=True))
  return json.loads(json.dumps(config, sort_keys=True, default=_json_default))


def _identity_field(key: str) -> bool:
  """A field a resume must not change: its role (``train/fields.py``) is result or input;
  ``train.num_steps`` is compared on its own (``check_identity``: it may grow on purpose)."""
  return key != "train.num_steps" and fields_lib.in_identity(key)


def fingerprint(config: Any) -> tuple[str, dict[str, Any]]:
  """``(sha256 hex digest, {dotted key: value})`` over the fields that change a run's result
  (roles ``result`` and ``input`` in ``train/fields.py``; ``train.num_steps`` is compared on its
  own). Takes a ConfigDict or a plain dict (a config.json's content); both give the same digest."""
  fields = fields_lib.select(_plain(config), _identity_field)
  blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(blob.encode()).hexdigest(), fields


def _get(config: Any, dotted: str, default: Any = None) -> Any:
  node = config
  for part in dotted.split("."):
    try:
      if part not in node:
        return default
      node = node[part]
    except TypeError:
      return default
  return node


def _num_steps_dependents(fields: Mapping[str, Any]) -> list[str]:
  """What in a config is laid out over train.num_steps, so an extended run follows two layouts."""
  out = []
  schedule = fields.get("optim.schedule")
  if schedule not in (None, "constant"):
    out.append(f"optim.schedule={schedule!r} spans train.num_steps")
  rules = fields.get("freezing.param_rules") or []
  if any(isinstance(r, (list, tuple)) and len(r) > 1 and isinstance(r[1], dict)
         and "schedule" in r[1] for r in rules):
    out.append("a freezing rule's own schedule spans train.num_steps")
  if fields.get("adapt.method") == "dann" and fields.get("adapt.lambda_schedule") == "paper":
    out.append("adapt.lambda_schedule='paper' ramps over train.num_steps")
  return out


def _recorded(workdir: str) -> dict | None:
  """The workdir's identity record: identity.json, or for a workdir written before identities
  existed, one made from its config.json; None for a fresh workdir."""
  path = os.path.join(workdir, IDENTITY_FILE)
  legacy = not os.path.exists(path)
  if legacy:
    path = RunDir(workdir).config_json
    if not os.path.exists(path):
      return None
  with open(path) as f:
    try:
      content = json.load(f)
    except ValueError as e:
      raise ValueError(f"{path} is not valid JSON ({e}), so this workdir's config is unknown: "
                       "restore the file, or use a new --workdir") from e
  if not legacy:
    return content
  digest, fields = fingerprint(content)
  return {"digest": digest, "fields": fields, "num_steps": _get(content, "train.num_steps"),
          "from": "config.json"}


def check_identity(workdir: str | os.PathLike, config: Any, *,
                   allow_extend: bool | None = None) -> None:
  """Raises ``WorkdirMismatchError`` unless ``config`` may continue the run recorded in
  ``workdir/identity.json`` (or its config.json, in a workdir older than identities).

  Every result-changing field must be equal. ``train.num_steps`` may only grow, and only with
  ``allow_extend`` (default: the config's ``train.allow_extend``, False when absent): the steps
  done followed the old length's schedule and evaluations, so an extended run is neither the old
  run nor a fresh run of the new length; the error and the warning say which fields make it so.
  A fresh workdir passes.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  record = _recorded(workdir)
  if record is None:
    return
  _, fields = fingerprint(config)
  # Under today's roles: a field a later version reclassified (say, as execution) no longer counts.
  old_fields = {k: v for k, v in record.get("fields", {}).items() if _identity_field(k)}
  diffs = {k: (old_fields.get(k, _ABSENT), fields.get(k, _ABSENT))
           for k in sorted(old_fields.keys() | fields.keys())
           if old_fields.get(k, _ABSENT) != fields.get(k, _ABSENT)}
  old_steps, new_steps = record.get("num_steps"), _get(config, "train.num_steps")
  if allow_extend is None:
    allow_extend = bool(_get(config, "train.allow_extend", False))
  layout = "; ".join(_num_steps_dependents(fields) + [
      "the evaluation and checkpoint at the old last step stay in the record (and may be best)"])
  steps_note, extending = None, False
  if None not in (old_steps, new_steps) and new_steps != old_steps:
    if new_steps < old_steps:
      steps_note = "a run cannot be shortened: its later steps are done"
    elif not allow_extend:
      steps_note = ("to continue this run to the new length on purpose, set "
                    f"train.allow_extend=True; the result is then neither run's: {layout}")
    elif diffs:
      steps_note = "train.allow_extend extends a run only when nothing else changed"
    else:
      extending = True
  if not diffs and steps_note is None:
    if extending:
      logging.warning("Extending the run in %s from %d to %d steps (train.allow_extend): %s.",
                      workdir, old_steps, new_steps, layout)
    return
  lines = [f"  {k}: {_show(a)} -> {_show(b)}" for k, (a, b) in diffs.items()]
  if steps_note is not None:
    lines.append(f"  train.num_steps: {old_steps} -> {new_steps} ({steps_note})")
    diffs["train.num_steps"] = (old_steps, new_steps)
  source = record.get("from", IDENTITY_FILE)
  raise WorkdirMismatchError(
      f"workdir {workdir} holds a run of another config ({source}); {len(lines)} result-changing "
      "field(s) differ:\n" + "\n".join(lines) + "\n"
      "Its checkpoints, metrics and export belong to the old config, and resuming would mix the "
      f"two. Start a new run with a new --workdir, or delete {workdir} to start over.", diffs)


def _show(v: Any) -> str:
  return v if v is _ABSENT else json.dumps(v)


def write_identity(workdir: str | os.PathLike, config: Any) -> dict:
  """Records ``config``'s identity in ``workdir/identity.json`` (atomically) and returns it.

  Call it after ``check_identity`` passed. The lengths the run was extended through are kept in
  ``num_steps_history``.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  digest, fields = fingerprint(config)
  num_steps = _get(config, "train.num_steps")
  old = _recorded(workdir) or {}
  history = list(old.get("num_steps_history") or
                 ([old["num_steps"]] if old.get("num_steps") is not None else []))
  if not history or history[-1] != num_steps:
    history.append(num_steps)
  record = {"digest": digest, "num_steps": num_steps, "num_steps_history": history,
            "fields": fields}
  os.makedirs(workdir, exist_ok=True)
  atomic_write_json(os.path.join(workdir, IDENTITY_FILE), record, sort_keys=True)
  return record


__all__ = ["IDENTITY_FILE", "WorkdirMismatchError", "check_identity", "fingerprint", "write_identity"]
