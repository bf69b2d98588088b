"""Host memory: let XLA:CPU reuse its buffers from one step to the next instead of faulting them in.

    from jtransfer import hostmem
    hostmem.reuse_freed_memory()    # first thing in a process's main(), before JAX runs anything

XLA:CPU allocates a step's activations and gradients with ``malloc`` and frees them when the step
ends. glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and
gives the freed ones back; each thread's arena also returns the free top of its heap. So every
step page-faults its whole working set in again and the kernel zeroes it: ResNet-18's 224-px,
batch-32 train step took ~240,000 minor faults (~1 GB) and ~0.5 s of system time per step, ~10 % of
the step (docs/speed.md). After ``reuse_freed_memory()`` the same step takes none.

It sets glibc's malloc (``mallopt``) to one arena for all threads (``M_ARENA_MAX=1``), no ``mmap``
for large blocks (``M_MMAP_MAX=0``: they come from the heap) and no trimming of the heap's free top
(``M_TRIM_THRESHOLD=-1``). Threads that already hold an arena keep it, so call it before
JAX starts its thread pool (the first computation). The price: the process keeps the heap at its
peak (a training process reaches its peak every step anyway). ``JTRANSFER_MALLOC=system`` leaves
malloc as it is; on a C library other than glibc it does nothing.

The entry points call it: ``jtransfer.main``, ``jtransfer.benchmark``, ``jtransfer.predict``, and
the test session (``tests/conftest.py``).
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "JTRANSFER_MALLOC"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# M_TRIM_THRESHOLD -1: never trim. A finite one (mallopt takes an int: at most 2 GiB) still gave
# back the free top of EfficientNet-Lite0's 2.6 GB step at 224 px, batch 32, every step.
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))


def reuse_freed_memory() -> bool:
  """Sets glibc's malloc to keep and reuse freed memory; True when it did.

  False where ``JTRANSFER_MALLOC=system`` or the C library is not glibc. Raises ValueError for
  another value of ``JTRANSFER_MALLOC``, and OSError if glibc refuses a setting.
  """
  policy = os.environ.get(ENV, "reuse")
  if policy not in ("reuse", "system"):
    raise ValueError(f"{ENV}={policy!r}: expected 'reuse' (the default) or 'system'")
  if policy == "system" or platform.libc_ver()[0] != "glibc":
    return False
  mallopt = ctypes.CDLL(None).mallopt
  for param, value in _SETTINGS:
    if mallopt(param, value) != 1:
      raise OSError(f"glibc mallopt({param}, {value}) failed; set {ENV}=system to skip it")
  return True
