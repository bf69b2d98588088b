"""A workdir never lies: one run at a time, one config per workdir, files whole or absent.

    from jtransfer import workdir as wd
    with wd.WorkdirLock("workdirs/run"):                 # a second run on it: WorkdirInUseError
      wd.check_identity("workdirs/run", config)          # another config: WorkdirMismatchError
      wd.write_identity("workdirs/run", config)
      wd.cleanup_leftovers("workdirs/run")               # what a killed run left half-written
      wd.truncate_metrics("workdirs/run/metrics.jsonl", restored_step)
      wd.atomic_write_text("workdirs/run/config.json", config.to_json_best_effort(indent=1))

The pieces, each usable alone (``rundir.py``, ``atomic.py``, ``lock.py``, ``identity.py``,
``jsonl.py``; this package gathers their public names):

- ``RunDir``: the one owner of a run directory's layout (``config.json``, ``metrics.jsonl``,
  ``checkpoints/``, ``export/``, ``result.json``); every writer and reader goes through it.
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

from jtransfer.workdir.atomic import (
  atomic_write_bytes,
  atomic_write_dir,
  atomic_write_json,
  atomic_write_text,
  cleanup_leftovers,
)
from jtransfer.workdir.identity import (
  IDENTITY_FILE,
  WorkdirMismatchError,
  check_identity,
  fingerprint,
  write_identity,
)
from jtransfer.workdir.jsonl import read_jsonl, truncate_metrics
from jtransfer.workdir.lock import LOCK_FILE, WorkdirInUseError, WorkdirLock
from jtransfer.workdir.rundir import RunDir

__all__ = ["IDENTITY_FILE", "LOCK_FILE", "RunDir", "WorkdirInUseError", "WorkdirLock",
           "WorkdirMismatchError", "atomic_write_bytes", "atomic_write_dir", "atomic_write_json",
           "atomic_write_text", "check_identity", "cleanup_leftovers", "fingerprint", "read_jsonl",
           "truncate_metrics", "write_identity"]
