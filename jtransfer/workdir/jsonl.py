"""JSON-lines records after a kill: torn lines skipped, lines past a resumed step dropped.

    rows = wd.read_jsonl("run/metrics.jsonl")
    wd.truncate_metrics("run/metrics.jsonl", restored_step)
"""

from __future__ import annotations

import json
import os

from absl import logging

from jtransfer.workdir.atomic import atomic_write_text


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


__all__ = ["read_jsonl", "truncate_metrics"]
