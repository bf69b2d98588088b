"""Experiment configs importable from any directory: the command lines call this before flags parse.

    configs_path.add_from_argv(sys.argv)   # --config=/repo/configs/benchmark/demo.py:quick
    config_flags.DEFINE_config_file("config", ...)
    app.run(main)                          # loads the file; its `from configs import common` works

Experiment files live in the repository's top-level ``configs`` package (``configs/``, not shipped
with ``jtransfer``) and import their shared pieces as modules (``from configs import common``).
``ml_collections.config_flags`` executes the file given to ``--config`` while absl parses the flags,
so the folder holding that package must be on ``sys.path`` first: from the file's folder, walk up
while the folder is a package (has ``__init__.py``); the folder above the last package goes first
on ``sys.path``. Run from the repository root, that folder is already there; from anywhere else it
is what makes ``--config=/path/to/repo/configs/x.py`` load.
"""

from __future__ import annotations

import os
import sys


def package_root(config_file: str) -> str | None:
  """The folder that holds ``config_file``'s top-level package, or None if the file's folder is
  not a package (a lone config file imports nothing of its siblings)."""
  folder = os.path.dirname(os.path.abspath(config_file))
  root = folder
  while os.path.isfile(os.path.join(root, "__init__.py")):
    parent = os.path.dirname(root)
    if parent == root:
      break
    root = parent
  return None if root == folder else root


def add_package_root(config_file: str) -> str | None:
  """Puts :func:`package_root` of ``config_file`` first on ``sys.path``; returns it.

  Raises FileNotFoundError naming the path (and the working directory it was read from) when
  ``config_file`` does not exist.
  """
  if not os.path.isfile(config_file):
    raise FileNotFoundError(f"config file {config_file!r} does not exist (working directory "
                            f"{os.getcwd()})")
  root = package_root(config_file)
  if root is not None:
    if root in sys.path:
      sys.path.remove(root)
    sys.path.insert(0, root)
  return root


def config_file_from_argv(argv: list[str], flag: str = "config") -> str | None:
  """The file of the last ``--FLAG=PATH[:ARG]`` (or ``--FLAG PATH[:ARG]``, one dash too) in
  ``argv``, as absl reads it: the last one wins, nothing after ``--`` is a flag."""
  value = None
  args = iter(argv[1:])
  for arg in args:
    if arg == "--":
      break
    name, eq, rest = arg.lstrip("-").partition("=")
    if not arg.startswith("-") or name != flag:
      continue
    value = rest if eq else next(args, None)
  return None if value is None else value.split(":", 1)[0]


def add_from_argv(argv: list[str], flag: str = "config") -> str | None:
  """:func:`add_package_root` for the file of ``--FLAG`` in ``argv`` (none: does nothing). A
  command line calls it before absl parses ``argv``; a missing file exits naming the path."""
  path = config_file_from_argv(argv, flag)
  if not path:
    return None  # absl reports a missing required flag, or an empty path, itself
  try:
    return add_package_root(path)
  except FileNotFoundError as e:
    raise SystemExit(f"--{flag}: {e}") from None
