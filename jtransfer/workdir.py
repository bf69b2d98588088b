"""A workdir never lies: one run at a time, one config per workdir, files whole or absent.

    from jtransfer import workdir as wd
    with wd.WorkdirLock("workdirs/run"):                 # a second run on it: WorkdirInUseError
      wd.check_identity("workdirs/run", config)          # another config: WorkdirMismatchError
      wd.write_identity("workdirs/run", config)
      wd.cleanup_leftovers("workdirs/run")               # what a killed run left half-written
      wd.truncate_metrics("workdirs/run/metrics.jsonl", restored_step)
      wd.atomic_write_text("workdirs/run/config.json", config.to_json_best_effort(indent=1))

The pieces, each usable alone:

- ``atomic_write_text``/``atomic_write_json``: every small file of a run (config, result, identity,
  class names, predictions) is written to a temp file beside it, fsynced and renamed over it, so a
  reader or a kill sees the old file or the new one, never a torn one.
- ``atomic_write_dir(directory, fill, overwrite=True)``: the same for a directory (``weights.save``
  uses it for exports). ``directory`` becomes a relative symlink to a versioned sibling
  ``.<name>-<32 hex>``; a new version is filled beside it and the symlink is replaced with
  ``os.replace``, atomic on every POSIX filesystem. An existing plain directory (an older layout)
  is swapped for the symlink with Linux's ``renameat2(RENAME_EXCHANGE)``; where the filesystem
  lacks it (NFS, macOS) the old dir is moved aside for the instant between two renames, and a kill
  in that instant is rolled back by ``cleanup_leftovers``.
- ``cleanup_leftovers``: removes what an interrupted write left (temp files, temp links, versioned
  dirs no link points to, the old ``.tmp-weights-*``/``.old-weights-*``), restoring a dir moved
  aside when its name is missing.
- ``WorkdirLock``: an exclusive ``flock`` on ``workdir/.lock`` holding ``{"pid", "host",
  "started"}``. The OS drops it when its holder dies (SIGKILL included), so there are no stale
  locks to remove. In a multi-host run only process 0 takes it (every host would otherwise
  contend for one file on the shared filesystem). ``flock`` is exclusive across hosts on NFSv4
  (Linux maps it to a POSIX lock); on FUSE object stores (gcsfuse) it is local to each host.
- ``fingerprint``/``check_identity``/``write_identity``: ``workdir/identity.json`` records the
  fields that change a run's result; resuming under a config that differs in any of them is an
  error listing each (the roles in ``train/fields.py`` say which may change, and ``check_identity`` for
  the one deliberate exception, growing ``train.num_steps`` with ``train.allow_extend``).
- ``truncate_metrics``/``read_jsonl``: after a resume from step S the lines past S are dropped
  (they are about to be written again); a line torn by a kill mid-append is dropped with a warning.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from typing import Any, Callable, Mapping
import uuid

from absl import logging

from jtransfer.train import fields as fields_lib

LOCK_FILE = ".lock"
IDENTITY_FILE = "identity.json"

_VERSIONED = re.compile(r"^\.(?P<name>.+)-(?P<hex>[0-9a-f]{32})(?P<suffix>\.link|\.old)?$")
_LEGACY_TMP = ".tmp-weights-"  # Left by the weights.save of before versioned dirs.
_LEGACY_OLD = ".old-weights-"


# ---------------------------------------------------------------------------------------------
# Atomic files and directories.


def _fsync_dir(path: str) -> None:
  """Makes a rename inside ``path`` durable; some filesystems cannot fsync a dir (ignored there)."""
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
  """Writes ``text`` to ``path`` so that a reader, or a kill at any moment, sees the old content or
  the new one: a temp file in the same dir (same filesystem, so the rename is atomic), fsynced,
  ``os.replace``d over ``path``, then the dir fsynced. Returns ``path``."""
  return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, content: bytes) -> str:
  """``atomic_write_text`` for bytes (a PNG, a binary file)."""
  path = os.path.abspath(os.fspath(path))
  parent, name = os.path.split(path)
  # Hidden, unique, and ending in .tmp: what cleanup_leftovers removes after a kill.
  tmp = os.path.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise
  _fsync_dir(parent)
  return path


def _json_default(obj: Any) -> Any:
  if hasattr(obj, "tolist"):  # numpy arrays and scalars
    return obj.tolist()
  raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1,
                      sort_keys: bool = False) -> str:
  """``atomic_write_text`` of ``obj`` as JSON (numpy values as lists/numbers). NaN is written as
  Python writes it; pass ``writers.jsonable(obj)`` for strict JSON."""
  return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys,
                                            default=_json_default) + "\n")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
  """libc's ``renameat2`` (glibc >= 2.28 on Linux), or None."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    fn = ctypes.CDLL(None, use_errno=True).renameat2  # libc is loaded into every Linux process
  except (OSError, AttributeError):
    return None
  fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  fn.restype = ctypes.c_int
  return fn


def _exchange(a: str, b: str) -> bool:
  """Swaps the entries ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

  Returns False where the OS or the filesystem cannot (then nothing happened); raises other errors.
  """
  fn = _renameat2()
  if fn is None:
    return False
  if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
    return False
  raise OSError(err, os.strerror(err), a, None, b)


def _link_target(path: str) -> str | None:
  """The absolute path a symlink ``path`` points to (not resolved further), or None."""
  try:
    return os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
  except OSError:
    return None


def _fsync_tree(root: str) -> None:
  """fsyncs every file and dir under ``root``: the new content must be on disk before the name
  points at it, or a power cut could leave the name on empty files."""
  for dirpath, _, files in os.walk(root):
    for f in files:
      fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
    _fsync_dir(dirpath)


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    try:
      os.unlink(path)
    except FileNotFoundError:
      pass


def atomic_write_dir(directory: str | os.PathLike, fill: Callable[[str], None], *,
                     overwrite: bool = False) -> str:
  """Writes a directory atomically: ``fill(staging)`` writes its content into a fresh sibling, which
  then takes ``directory``'s place in one step. Returns ``directory`` (absolute).

  ``overwrite=False``: ``directory`` must not exist, and becomes a plain dir (one rename).
  ``overwrite=True``: ``directory`` becomes a symlink to the versioned sibling ``.<name>-<hex>``,
  replaced in one ``os.replace`` by every later write; the old version is removed afterwards. A
  reader, or a kill at any point, finds the whole old content or the whole new one (save for the
  one case in the module docstring: an old plain dir on a filesystem without RENAME_EXCHANGE).

  Removes this name's leftovers of an interrupted earlier write first. Two writers of the same
  ``directory`` at once are not supported (a run's export is under its ``WorkdirLock``).
  """
  directory = os.path.abspath(os.fspath(directory))
  parent, name = os.path.split(directory)
  if os.path.lexists(directory) and not overwrite:
    raise FileExistsError(f"{directory} exists; refusing to overwrite it (overwrite=False)")
  os.makedirs(parent, exist_ok=True)
  cleanup_leftovers(parent, name=name)
  staged = os.path.join(parent, f".{name}-{uuid.uuid4().hex}")
  link = staged + ".link"
  aside = staged + ".old"
  os.mkdir(staged)
  installed = False
  try:
    fill(staged)
    _fsync_tree(staged)
    if not overwrite:
      os.rename(staged, directory)
      installed = True
      _fsync_dir(parent)
      return directory
    os.symlink(os.path.basename(staged), link)
    old_version = _link_target(directory) if os.path.islink(directory) else None
    if old_version is not None and not _is_version_of(old_version, parent, name):
      old_version = None  # A link the user made to elsewhere: replace the link, keep its target.
    old_plain = None
    if os.path.islink(directory) or not os.path.lexists(directory):
      os.replace(link, directory)
    elif _exchange(link, directory):
      old_plain = link  # The exchange left the old plain dir under the link's name.
    else:
      # No atomic swap of a dir for a link here: the old dir is absent for the instant between
      # the two renames; a kill there leaves it under `aside`, which cleanup_leftovers restores.
      os.rename(directory, aside)
      os.replace(link, directory)
      old_plain = aside
    installed = True
    _fsync_dir(parent)
    for old in (old_plain, old_version):
      if old is not None:
        _remove(old)
    return directory
  except BaseException:
    if not installed:  # Back to the state before the call: the old content under its name.
      try:
        if os.path.lexists(aside) and not os.path.lexists(directory):
          os.rename(aside, directory)
        for path in (link, staged):
          _remove(path)
      except OSError:
        pass  # cleanup_leftovers finishes the job on the next write.
    raise


def _is_version_of(path: str, parent: str, name: str | None) -> bool:
  m = _VERSIONED.match(os.path.basename(path))
  return (os.path.dirname(path) == parent and m is not None and not m["suffix"]
          and (name is None or m["name"] == name))


def cleanup_leftovers(directory: str | os.PathLike, *, name: str | None = None) -> list[str]:
  """Removes what interrupted atomic writes left in ``directory`` (a workdir, or an export's
  parent) and returns the paths it removed or restored, for a log line.

  Removed: ``*.tmp`` files (``atomic_write_text``'s temp files), ``.<name>-<hex>.link`` temp
  links, versioned dirs ``.<name>-<hex>`` that no symlink in ``directory`` points to, and the old
  ``weights.save``'s ``.tmp-weights-*``/``.old-weights-*``. A dir moved aside
  (``.<name>-<hex>.old``, or an old ``.old-weights-*/d`` of ``export``) is renamed back when
  ``<name>`` is missing: that is a kill between the two renames of a non-atomic swap, and the old
  content is the consistent state.

  ``name``: only that entry's dirs and links (what ``atomic_write_dir`` cleans before writing,
  leaving other files' temp files alone); None = everything, for a workdir under its lock.
  Call it only while nothing else writes there.
  """
  directory = os.path.abspath(os.fspath(directory))
  if not os.path.isdir(directory):
    return []
  done = []
  entries = sorted(os.listdir(directory))
  path = lambda e: os.path.join(directory, e)

  # First put back what a swap moved aside, so the versioned dirs it replaced count as orphans.
  for e in entries:
    m = _VERSIONED.match(e)
    if m and m["suffix"] == ".old" and (name is None or m["name"] == name):
      target = path(m["name"])
      if not os.path.lexists(target):
        os.rename(path(e), target)
        done.append(f"restored {target} from {e}")
      else:
        _remove(path(e))
        done.append(path(e))
    elif e.startswith(_LEGACY_OLD) and name in (None, "export"):
      # The old weights.save moved `export` (its only overwrite=True user) to .old-weights-*/d.
      inner = os.path.join(path(e), "d")
      target = path("export")
      if os.path.isdir(inner) and not os.path.lexists(target):
        os.rename(inner, target)
        done.append(f"restored {target} from {e}/d")
      _remove(path(e))
      done.append(path(e))
  entries = sorted(os.listdir(directory))

  for e in entries:
    m = _VERSIONED.match(e)
    temp_link = m and m["suffix"] == ".link" and (name is None or m["name"] == name)
    legacy_tmp = e.startswith(_LEGACY_TMP) and os.path.isdir(path(e))
    # atomic_write_text's `.<file>.<hex>.tmp`, and the `result.json.tmp` of the trainer's writes
    # before it: in a workdir under its lock, every `*.tmp` file is an interrupted write.
    tmp_file = name is None and e.endswith(".tmp") and os.path.isfile(path(e))
    if temp_link or legacy_tmp or tmp_file:
      _remove(path(e))
      done.append(path(e))
  entries = sorted(os.listdir(directory))

  pointed = {_link_target(path(e)) for e in entries if os.path.islink(path(e))}
  for e in entries:
    p = path(e)
    if _is_version_of(p, directory, name) and not os.path.islink(p) and p not in pointed:
      _remove(p)
      done.append(p)
  if done:
    logging.info("Removed leftovers of interrupted writes in %s: %s", directory, done)
  return done


# ---------------------------------------------------------------------------------------------
# One run at a time.


class WorkdirInUseError(RuntimeError):
  """Another process holds the workdir's lock; the message names its pid, host and start."""

  def __init__(self, message: str, holder: Mapping[str, Any] | None = None):
    super().__init__(message)
    self.holder = dict(holder or {})


class WorkdirLock:
  """An exclusive, non-blocking lock on ``workdir`` for the duration of a run.

  ``fcntl.flock`` on ``workdir/.lock``, which then holds ``{"pid", "host", "started"}`` for the
  error a second acquirer gets. The kernel releases it when the holder exits or is killed, so a
  crashed run never leaves a stale lock. The file itself stays (removing it would let two
  processes lock two different files of one name). The lock belongs to an open file, so a second
  ``WorkdirLock`` on the same workdir in the same process is refused too. A child forked without
  exec while it is held holds it as long as the child lives.

  In a multi-host run, take it on process 0 only.
  """

  def __init__(self, workdir: str | os.PathLike, *, clock: Callable[[], float] = time.time):
    self.workdir = os.path.abspath(os.fspath(workdir))
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._clock = clock
    self._fd: int | None = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def acquire(self) -> WorkdirLock:
    """Takes the lock or raises ``WorkdirInUseError``; returns self."""
    if self._fd is not None:
      raise RuntimeError(f"{self.path} is already held by this WorkdirLock")
    os.makedirs(self.workdir, exist_ok=True)
    # No O_TRUNC: the holder's record must survive until the lock is ours.
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_holder(fd)
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirInUseError(_in_use_message(self.workdir, holder), holder) from None
    started = datetime.datetime.fromtimestamp(self._clock(), datetime.timezone.utc)
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": started.isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.ftruncate(fd, 0)  # No record of a holder that is gone.
    except OSError:
      pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> dict:
  try:
    record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):
    return {}  # Being written by a holder that has just taken the lock.
  return record if isinstance(record, dict) else {}


def _in_use_message(workdir: str, holder: Mapping[str, Any]) -> str:
  who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
         f"{holder.get('started', '?')}") if holder else "another process (not yet recorded)"
  return (f"workdir {workdir} is in use by {who}. Wait for that run to finish or stop it, or use "
          "another --workdir. (A run that crashed holds no lock: the OS releases it.)")


# ---------------------------------------------------------------------------------------------
# Run identity.


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
    path = os.path.join(workdir, "config.json")
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


# ---------------------------------------------------------------------------------------------
# metrics.jsonl after a kill.


def _parse_jsonl(path: str) -> list[tuple[str, dict]]:
  """``[(line, object)]`` of ``path``, leaving out (with a warning) lines that are not a JSON
  object: a torn last line is a kill mid-append; one before it is such a line that a resume
  without ``truncate_metrics`` appended to."""
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().split("\n")
  numbered = [(i + 1, l) for i, l in enumerate(lines) if l.strip()]
  out = []
  for j, (lineno, line) in enumerate(numbered):
    try:
      obj = json.loads(line)
    except ValueError:
      obj = None
    if isinstance(obj, dict):
      out.append((line, obj))
      continue
    why = ("a kill mid-append" if j == len(numbered) - 1 else
           "a torn line that a resumed run appended to, or corruption")
    logging.warning("Skipping %s:%d, not a JSON object (%s): %.80r", path, lineno, why, line)
  return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The JSON objects of ``path``, one per line. A line that is not one (the torn last line of a
  killed run) is left out with a warning naming it, never an exception."""
  return [obj for _, obj in _parse_jsonl(os.fspath(path))]


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
  """Keeps the lines of ``path`` whose ``step`` is at most ``step`` (and lines without one),
  rewriting it atomically; returns how many lines were dropped. A missing file is left missing.

  Call it on resume with the restored checkpoint's step (0 when none) before anything is
  appended: the steps after it were written by the killed run and will be written again.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8", errors="replace") as f:
    total = sum(1 for l in f if l.strip())
  keep = [line for line, obj in _parse_jsonl(path)
          if not (isinstance(obj.get("step"), int) and obj["step"] > step)]
  dropped = total - len(keep)
  if dropped:
    atomic_write_text(path, "".join(line + "\n" for line in keep))
    logging.info("Dropped %d lines after step %d from %s (written after the checkpoint resumed)",
                 dropped, step, path)
  return dropped


__all__ = ["IDENTITY_FILE", "LOCK_FILE", "WorkdirInUseError", "WorkdirLock",
           "WorkdirMismatchError", "atomic_write_dir", "atomic_write_json", "atomic_write_text",
           "check_identity", "cleanup_leftovers", "fingerprint", "read_jsonl", "truncate_metrics",
           "write_identity"]
