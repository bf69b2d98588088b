"""Files and directories written whole or not at all, and what an interrupted write left.

    wd.atomic_write_text(path, text); wd.atomic_write_json(path, obj); wd.atomic_write_bytes(...)
    wd.atomic_write_dir("run/export", fill, overwrite=True)    # a symlink swapped in one step
    wd.cleanup_leftovers("run")                                 # after a kill

See the package docstring (``jtransfer.workdir``) for what each guarantees.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import shutil
import sys
from typing import Any, Callable
import uuid

from absl import logging

_VERSIONED = re.compile(r"^\.(?P<name>.+)-(?P<hex>[0-9a-f]{32})(?P<suffix>\.link|\.old)?$")
_LEGACY_TMP = ".tmp-weights-"  # Left by the weights.save of before versioned dirs.
_LEGACY_OLD = ".old-weights-"


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


__all__ = ["atomic_write_bytes", "atomic_write_dir", "atomic_write_json", "atomic_write_text", "cleanup_leftovers"]
