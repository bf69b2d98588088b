"""One run at a time: an exclusive ``flock`` on ``workdir/.lock`` naming its holder.

    with wd.WorkdirLock("workdirs/run"): ...      # a second process: WorkdirInUseError
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import time
from typing import Any, Callable, Mapping

LOCK_FILE = ".lock"


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


__all__ = ["LOCK_FILE", "WorkdirInUseError", "WorkdirLock"]
