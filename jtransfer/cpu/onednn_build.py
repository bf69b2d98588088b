"""Builds the optional oneDNN convolution extension that ``jtransfer.cpu.onednn`` loads.

    make onednn
    python -m jtransfer.cpu.onednn_build build [--prefix=DIR] [--cxx=g++]
    python -m jtransfer.cpu.onednn_build check          # exit 0 when it loads, else why not

Needs g++ and Debian's package tools: ``apt-get download`` fetches ``libdnnl-dev`` 2.6 (oneDNN
with OpenMP threading), its ``libdnnl2`` and the OpenCL loader that library links, and
``dpkg-deb -x`` unpacks them into ``<prefix>/root`` (no root, no system install). The source,
``onednn_conv.cc``, compiles against those headers and the XLA FFI headers jaxlib ships
(``jax.ffi.include_dir()``), to ``<prefix>/libjtransfer_onednn.so`` (default ``<venv>/onednn``),
written to a temporary name and renamed, so an interrupted build leaves no half library.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import subprocess
import tempfile

import jax

from jtransfer.cpu import onednn

SOURCE = Path(__file__).with_name("onednn_conv.cc")
# Debian bookworm's oneDNN (OpenMP threading) and the OpenCL ICD loader its library links.
DEBIAN_PACKAGES = ("libdnnl2", "libdnnl-dev", "ocl-icd-libopencl1")


def _run(cmd: list[str], cwd: Path):
  proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f"onednn build: `{' '.join(cmd)}` failed ({proc.returncode}):\n"
                     f"{proc.stdout}{proc.stderr}")


def _download(where: Path):
  """``apt-get download`` of the packages; once more after ``apt-get update`` (as root) when the
  package lists are missing or stale."""
  cmd = ["apt-get", "download", *DEBIAN_PACKAGES]
  if subprocess.run(cmd, cwd=where, capture_output=True).returncode and os.geteuid() == 0:
    _run(["apt-get", "update", "-qq"], where)
  _run(cmd, where)


def build(prefix: Path, cxx: str = "g++") -> Path:
  """Fetches Debian's oneDNN into ``prefix`` and compiles the extension there; returns its path."""
  for tool in (cxx, "apt-get", "dpkg-deb"):
    if shutil.which(tool) is None:
      raise SystemExit(f"onednn build: `{tool}` is not on PATH (the extension is optional: "
                       "conv_impl='xla' and 'matmul' need nothing)")
  prefix = Path(prefix).resolve()
  root = prefix / "root"
  if not list(root.glob("usr/lib/*/libdnnl.so.2")):
    # Unpacked beside the prefix and renamed into place: a half-unpacked tree is never used.
    with tempfile.TemporaryDirectory(dir=prefix) as t:
      _download(Path(t))
      for deb in sorted(Path(t).glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(Path(t) / "root")], Path(t))
      shutil.rmtree(root, ignore_errors=True)
      os.replace(Path(t) / "root", root)
  out = prefix / onednn.LIB_NAME
  tmp = prefix / f".{onednn.LIB_NAME}.tmp"
  _run([cxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-w", str(SOURCE), "-o", str(tmp),
        *compile_flags(prefix)], prefix)
  os.replace(tmp, out)
  return out


def compile_flags(prefix: Path) -> list[str]:
  """The compiler flags that compile and link against the oneDNN ``build`` unpacked into
  ``prefix`` and jaxlib's XLA FFI headers (``tests/test_onednn.py`` builds a harness with them)."""
  root = Path(prefix).resolve() / "root"
  found = list(root.glob("usr/lib/*/libdnnl.so.2"))
  if not found:
    raise SystemExit(f"onednn build: the packages {DEBIAN_PACKAGES} hold no libdnnl.so.2")
  lib_dir = found[0].parent
  # --disable-new-dtags: an RPATH (not RUNPATH) also finds libdnnl's own libOpenCL in lib_dir.
  return [f"-I{jax.ffi.include_dir()}", f"-I{root / 'usr' / 'include'}", f"-L{lib_dir}",
          "-l:libdnnl.so.2", f"-Wl,--disable-new-dtags,-rpath,{lib_dir}"]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="cmd", required=True)
  b = sub.add_parser("build", help="fetch oneDNN (Debian packages) and compile the extension")
  b.add_argument("--prefix", type=Path, default=onednn.default_prefix())
  b.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
  sub.add_parser("check", help="exit 0 when the extension loads, else say why")
  args = parser.parse_args(argv)
  if args.cmd == "build":
    args.prefix.mkdir(parents=True, exist_ok=True)
    print(build(args.prefix, args.cxx))
  else:
    why = onednn._load()  # pylint: disable=protected-access
    print(why or f"{onednn.library_path()} loads")
    raise SystemExit(0 if why is None else 1)


if __name__ == "__main__":
  main()
