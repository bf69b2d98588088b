"""Host memory: let XLA:CPU reuse its buffers from one step to the next instead of faulting them in.

    from jtransfer.cpu import hostmem
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

It is for XLA:CPU only: a process that will run on a GPU or TPU keeps glibc's defaults (one arena
for every tf.data thread and a heap never trimmed buy it nothing there). The backend is not known
before JAX starts, so ``cpu_backend_expected()`` reads what decides it: ``JAX_PLATFORMS`` (or
``jax_platforms``) when set, else whether an accelerator plugin (CUDA, ROCm, TPU) is installed.

The entry points call it: ``jtransfer.main``, ``jtransfer.benchmark``, ``jtransfer.predict``, and
the test session (``tests/conftest.py``).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import sys

ENV = "JTRANSFER_MALLOC"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# M_TRIM_THRESHOLD -1: never trim. A finite one (mallopt takes an int: at most 2 GiB) still gave
# back the free top of EfficientNet-Lite0's 2.6 GB step at 224 px, batch 32, every step.
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))


# Distributions whose presence makes JAX pick an accelerator by default.
_ACCELERATOR_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm6-plugin",
                        "jax-rocm7-plugin", "libtpu", "libtpu-nightly")


def cpu_backend_expected(platforms: str | None = None) -> bool:
  """Whether JAX's default backend will be the CPU, read without starting JAX.

  ``platforms``: JAX's platform list (default: ``JAX_PLATFORMS``, else the ``jax_platforms``
  config when jax is already imported); its first entry decides. Unset, an installed accelerator
  plugin means JAX will take the accelerator where one is present: not the CPU.
  """
  if platforms is None:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    jax = sys.modules.get("jax")
    if not platforms and jax is not None:
      platforms = jax.config.jax_platforms or ""
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  for name in _ACCELERATOR_PLUGINS:
    try:
      importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
      continue
    return False
  return True


def reuse_freed_memory() -> bool:
  """Sets glibc's malloc to keep and reuse freed memory; True when it did.

  False where ``JTRANSFER_MALLOC=system``, the C library is not glibc, or JAX will not run on the
  CPU (``cpu_backend_expected``). Raises ValueError for another value of ``JTRANSFER_MALLOC``, and
  OSError if glibc refuses a setting.
  """
  policy = os.environ.get(ENV, "reuse")
  if policy not in ("reuse", "system"):
    raise ValueError(f"{ENV}={policy!r}: expected 'reuse' (the default) or 'system'")
  if policy == "system" or platform.libc_ver()[0] != "glibc" or not cpu_backend_expected():
    return False
  mallopt = ctypes.CDLL(None).mallopt
  for param, value in _SETTINGS:
    if mallopt(param, value) != 1:
      raise OSError(f"glibc mallopt({param}, {value}) failed; set {ENV}=system to skip it")
  return True
