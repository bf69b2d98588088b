"""The one owner of a run directory's layout: every writer and reader of a run's files goes
through ``RunDir``, so the names live here and nowhere else.

    from jtransfer.workdir import RunDir
    run = RunDir("workdirs/run")
    run.write_config(config)              # config.json, whole or absent
    cfg = run.read_config()               # a ConfigDict, or None before the run starts
    run.finished()                        # result.json and export/ both there
    run.latest_step()                     # Orbax's newest checkpoint step, or None
    step, state = run.latest_state()      # and its saved state

The layout (one training run, or one benchmark trial, or one benchmark start):

    config.json      the full config the run used (``write_config``)
    identity.json    the fields that change its result (``workdir/identity.py``)
    metrics.jsonl    one JSON line per logged step (``train/writers.py``)
    checkpoints/     Orbax: ``<step>/state`` and ``<step>/meta`` (``train/checkpointing.py``)
    export/          the final variables + ``model.json`` (``weights.save``)
    result.json      the exported step's eval metrics and the run's facts (written last)
    tensorboard/     event files, when enabled
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ml_collections import config_dict

from jtransfer.workdir.atomic import atomic_write_json, atomic_write_text

__all__ = ["RunDir"]


@dataclasses.dataclass(frozen=True)
class RunDir:
  """A run's directory; each property is the path of one of its files."""

  path: str

  def __post_init__(self):
    object.__setattr__(self, "path", os.fspath(self.path))

  @property
  def config_json(self) -> str:
    return os.path.join(self.path, "config.json")

  @property
  def metrics(self) -> str:
    return os.path.join(self.path, "metrics.jsonl")

  @property
  def checkpoints(self) -> str:
    return os.path.join(self.path, "checkpoints")

  @property
  def export(self) -> str:
    return os.path.join(self.path, "export")

  @property
  def result_json(self) -> str:
    return os.path.join(self.path, "result.json")

  @property
  def tensorboard(self) -> str:
    return os.path.join(self.path, "tensorboard")

  def write_config(self, config: Any) -> None:
    """``config.json``: a ConfigDict (its best-effort JSON) or a plain mapping, atomically."""
    text = (config.to_json_best_effort(indent=1, sort_keys=True)
            if hasattr(config, "to_json_best_effort")
            else json.dumps(config, indent=1, sort_keys=True, default=str))
    atomic_write_text(self.config_json, text)

  def read_config(self) -> config_dict.ConfigDict | None:
    """The recorded config (``None`` when there is none yet); a torn file is an error naming it."""
    raw = self._read_json(self.config_json)
    return None if raw is None else config_dict.ConfigDict(raw)

  def write_result(self, result: dict) -> None:
    atomic_write_json(self.result_json, result)

  def read_result(self) -> dict | None:
    return self._read_json(self.result_json)

  def finished(self) -> bool:
    """True when the run wrote its export and, after it, its result."""
    return os.path.isfile(self.result_json) and os.path.isdir(self.export)

  def latest_step(self) -> int | None:
    """The newest checkpoint's step, as Orbax sees it (``None``: no checkpoint)."""
    if not os.path.isdir(self.checkpoints):
      return None
    with self._checkpoint_manager() as manager:
      return manager.latest_step()

  def latest_state(self) -> tuple[int, Any] | None:
    """``(step, state)`` of the newest checkpoint (the trainer's ``state`` item, as saved: no
    abstract tree needed), or ``None``; a save a kill left unfinished is not a checkpoint."""
    if not os.path.isdir(self.checkpoints):
      return None
    with self._checkpoint_manager() as manager:
      step = manager.latest_step()
      if step is None:
        return None
      import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top  (slow import)
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
      return step, restored["state"]

  def _checkpoint_manager(self):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top  (slow import)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    return ocp.CheckpointManager(self.checkpoints, options=options,
                                 item_handlers={"state": ocp.StandardCheckpointHandler()})

  @staticmethod
  def _read_json(path: str) -> Any:
    if not os.path.exists(path):
      return None
    with open(path) as f:
      try:
        return json.load(f)
      except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); was the run's directory edited?") from e
