"""Compiled programs shared by the runs of one process (train steps, eval steps, model inits).

    step = programs.shared(programs.train_key(config, ...), lambda: par.compile(step_fn))

A benchmark, a search over a grid or a test suite runs many short trainings whose programs are the
same: same model, optimizer, freezing rules and shapes; only the data, the seed and the weights
differ. ``jax.jit`` caches per function object, so every run that builds its own closure traces,
lowers and compiles again; the persistent compilation cache (``jax_compilation_cache_dir``) skips
the compile but still pays tracing, lowering and loading the executable: about 20 s of a 26 s
EfficientNet-Lite0 benchmark trial on this 2-core CPU. This cache hands a run the jitted function
an earlier run built, so the second run only calls it.

The train-step key is conservative: the run's config fields whose role (``train/fields.py``) is
``result`` or ``execution``. It leaves out the ``input`` fields (which examples and how the host
prepares them, weight paths, the seed and the peak learning rate, which are arguments of the step,
``trainer.extra_inputs``; input shapes need no key, ``jax.jit`` retraces for new ones) and the
``cosmetic`` ones (logging and checkpoint cadence), and adds what the config does not say (number
of classes, phase and its rules, parameter shapes, the device layout, the task's own key). A field
the roles table does not know is part of the key. Programs held here keep their executables
alive; ``clear()`` drops them.
"""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any, Callable

import jax

from jtransfer.train import fields

MAX_PROGRAMS = 24  # executables kept; the oldest goes first

_programs: collections.OrderedDict[Any, Callable] = collections.OrderedDict()
_stats = {"hits": 0, "misses": 0}


def config_key(config: Any) -> str:
  """A digest of ``config``'s fields that can change a compiled program (``fields.in_program``)."""
  tree = fields.select(json.loads(config.to_json_best_effort(sort_keys=True)), fields.in_program)
  return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()


def shapes_key(tree: Any) -> str:
  """The tree's structure, shapes and dtypes (not its values)."""
  leaves, treedef = jax.tree.flatten(tree)
  return f"{treedef}|" + ";".join(f"{getattr(x, 'shape', ())}{getattr(x, 'dtype', type(x))}"
                                  for x in leaves)


def device_key(par: Any) -> tuple:
  """The parallel layout: its kind and the devices it runs on."""
  mesh = getattr(par, "mesh", None)
  devices = mesh.devices.flat if mesh is not None else jax.devices()
  return (par.kind, tuple(int(d.id) for d in devices))


def shared(key: Any, build: Callable[[], Callable]) -> Callable:
  """The program stored under ``key`` (hashable), or ``build()``'s, stored."""
  if key in _programs:
    _programs.move_to_end(key)
    _stats["hits"] += 1
    return _programs[key]
  _stats["misses"] += 1
  program = build()
  _programs[key] = program
  while len(_programs) > MAX_PROGRAMS:
    _programs.popitem(last=False)
  return program


def stats() -> dict:
  """``{'hits', 'misses', 'held'}`` since the process started (or the last ``clear``)."""
  return {**_stats, "held": len(_programs)}


def clear() -> None:
  """Forgets every program (their executables are freed with the last reference)."""
  _programs.clear()
  _stats.update(hits=0, misses=0)


__all__ = ["MAX_PROGRAMS", "clear", "config_key", "device_key", "shapes_key",
           "shared", "stats"]
