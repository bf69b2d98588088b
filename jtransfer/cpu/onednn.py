"""oneDNN's CPU convolution kernels inside XLA, as an optional, separately built FFI extension.

    make onednn                     # or: python -m jtransfer.cpu.onednn_build build
    from jtransfer.cpu import onednn
    onednn.available()                            # True once built and loaded
    y = onednn.forward(x, kernel, strides=(1, 1), padding=((1, 1), (1, 1)))
    dx = onednn.backward_data(dy, kernel, x.shape, strides=..., padding=...)
    dk = onednn.backward_weights(x, dy, kernel.shape, strides=..., padding=...)

Three XLA FFI handlers (``onednn_conv.cc``, compiled against the headers jaxlib ships) call
oneDNN's convolution forward, backward-data and backward-weights primitives on float32 NHWC
activations and HWIO kernels, in process, on XLA's buffers: no copies. ``jtransfer.cpu.conv``
uses them as the 'onednn' formulation of each direction.

Why: XLA:CPU runs convolutions on large maps with Eigen's kernels, which on this 2-core AVX-512
CPU take ~1.5× the time of oneDNN's (the kernels PyTorch uses) at 224 px; no XLA flag or
formulation inside XLA closed that (BENCHMARKS.md, "ResNet-18 against PyTorch").

Optional by design: the package installs and runs without a compiler. ``onednn_build`` compiles
the library into ``<venv>/onednn/libjtransfer_onednn.so``; ``available()`` is False when it is
absent (``JTRANSFER_ONEDNN_LIB`` overrides the path), and asking for the 'onednn' formulation then
fails with the command that builds it.

Limits: CPU only; float32; undilated convolutions, grouped ones included (the callers keep
everything else on XLA); XLA's ``cost_analysis`` counts no FLOPs inside a custom call; under
``jit`` with arrays sharded over several devices XLA cannot partition the call and gathers its
operands, so
``conv_impl='auto'`` uses it only when the process has one device; ``vmap`` runs it once per
element (``vmap_method='sequential'``). ``JTRANSFER_ONEDNN_VERBOSE=1`` prints the primitive oneDNN
chose for each new shape.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
import sys
from typing import Sequence

import jax
import numpy as np

LIB_NAME = "libjtransfer_onednn.so"
_TARGETS = {"forward": "JtOnednnConvForward", "backward_data": "JtOnednnConvBackwardData",
            "backward_weights": "JtOnednnConvBackwardWeights"}
BUILD_HINT = "build it with `make onednn` (or `python -m jtransfer.cpu.onednn_build build`)"


def default_prefix() -> Path:
  return Path(sys.prefix) / "onednn"


def library_path() -> Path:
  env = os.environ.get("JTRANSFER_ONEDNN_LIB")
  return Path(env) if env else default_prefix() / LIB_NAME


@functools.cache
def _load() -> str | None:
  """Loads the library and registers its handlers once; None on success, else why not."""
  path = library_path()
  if not path.is_file():
    return f"{path} does not exist; {BUILD_HINT}"
  # libgomp reads this when it is loaded (here, with oneDNN, unless something loaded it before):
  # idle OpenMP threads then sleep instead of spinning on the cores XLA's thread pool needs next.
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  try:
    lib = ctypes.cdll.LoadLibrary(str(path))
  except OSError as e:
    return f"{path} does not load ({e}); rebuild it: {BUILD_HINT}"
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(f"jtransfer_onednn_conv_{name}",
                                jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return None


def available() -> bool:
  """Whether the extension is built and loads (loading it registers the FFI targets)."""
  return _load() is None


def require():
  why = _load()
  if why is not None:
    raise RuntimeError(f"conv formulation 'onednn' needs the oneDNN extension: {why}")


def supports(dtype) -> bool:
  """Whether the kernels compute this dtype (float32)."""
  return np.dtype(dtype) == np.float32


def _attrs(strides: Sequence[int], padding: Sequence[tuple[int, int]], groups: int) -> dict:
  (pt, pb), (pl, pr) = padding
  return dict(sh=np.int64(strides[0]), sw=np.int64(strides[1]), pt=np.int64(pt),
              pl=np.int64(pl), pb=np.int64(pb), pr=np.int64(pr), g=np.int64(groups))


def _call(name: str, shape, a, b, strides, padding, groups):
  require()
  out = jax.ShapeDtypeStruct(tuple(shape), np.float32)
  return jax.ffi.ffi_call(f"jtransfer_onednn_conv_{name}", out, vmap_method="sequential")(
      a, b, **_attrs(strides, padding, groups))


def forward(x, kernel, *, strides, padding, groups=1):
  """NHWC ``x`` (*) HWIO ``kernel`` with explicit ((top, bottom), (left, right)) padding, in
  ``groups`` as ``lax.conv_general_dilated``'s ``feature_group_count`` (kernel (kh, kw, I/G, O))."""
  (kh, kw, _, o) = kernel.shape
  oh, ow = ((i + lo + hi - k) // s + 1
            for i, k, s, (lo, hi) in zip(x.shape[1:3], (kh, kw), strides, padding))
  return _call("forward", (x.shape[0], oh, ow, o), x, kernel, strides, padding, groups)


def backward_data(dy, kernel, x_shape, *, strides, padding, groups=1):
  """The input gradient of ``forward`` for an input of ``x_shape``, given the output's ``dy``."""
  return _call("backward_data", x_shape, dy, kernel, strides, padding, groups)


def backward_weights(x, dy, kernel_shape, *, strides, padding, groups=1):
  """The kernel gradient of ``forward`` (HWIO ``kernel_shape``), given the output's ``dy``."""
  return _call("backward_weights", kernel_shape, x, dy, strides, padding, groups)
