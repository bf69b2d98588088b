"""jtransfer.cpu.hostmem: after reuse_freed_memory() a step's large buffers are reused, not faulted in."""

import json
import os
import subprocess
import sys

import pytest

from jtransfer.cpu import hostmem

# A jitted function whose 64 MiB output (above glibc's largest mmap threshold) is freed after each
# call; prints the minor page faults per call once warm. The runtime releases buffers a little after
# `del`, so the heap takes ~15 calls to hold every buffer in flight, more on a loaded machine (one
# run here measured 3,277 faults per call after 20): 40 warm it up, and the quietest of 4 windows
# of 5 calls counts.
_PROBE = r"""
import json, resource, sys
from jtransfer.cpu import hostmem
applied = hostmem.reuse_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0)
x = jnp.ones((4096, 4096), jnp.float32)
for _ in range(40):
  y = f(x); y.block_until_ready(); del y
windows = []
for _ in range(4):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    y = f(x); y.block_until_ready(); del y
  windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
print(json.dumps({"applied": applied, "faults": min(windows)}))
"""


def _probe(policy: str) -> dict:
  env = dict(os.environ, JTRANSFER_MALLOC=policy, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                       timeout=300, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_reuse_stops_the_page_faults_of_a_freed_output():
  reuse, system = _probe("reuse"), _probe("system")
  assert reuse["applied"] and not system["applied"]
  # 64 MiB is 16,384 pages of 4 KiB: faulted in on every call unless the heap keeps them.
  assert reuse["faults"] < 1000, reuse
  assert system["faults"] > reuse["faults"], (system, reuse)


def test_a_bad_policy_names_the_variable(monkeypatch):
  monkeypatch.setenv(hostmem.ENV, "jemalloc")
  with pytest.raises(ValueError, match="JTRANSFER_MALLOC='jemalloc'"):
    hostmem.reuse_freed_memory()


def test_system_policy_changes_nothing(monkeypatch):
  monkeypatch.setenv(hostmem.ENV, "system")
  assert hostmem.reuse_freed_memory() is False


def test_only_a_cpu_backend_gets_the_policy(monkeypatch):
  assert hostmem.cpu_backend_expected("cpu")
  assert hostmem.cpu_backend_expected("cpu,cuda")
  assert not hostmem.cpu_backend_expected("cuda")
  assert not hostmem.cpu_backend_expected("tpu,cpu")
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert not hostmem.cpu_backend_expected()
  assert hostmem.reuse_freed_memory() is False  # nothing set for a GPU process


def test_an_installed_accelerator_plugin_means_not_the_cpu(monkeypatch):
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  monkeypatch.setitem(sys.modules, "jax", None)  # as before jax is imported
  installed = {"jax-cuda12-plugin"}

  def distribution(name):
    if name not in installed:
      raise hostmem.importlib.metadata.PackageNotFoundError(name)
    return object()

  monkeypatch.setattr(hostmem.importlib.metadata, "distribution", distribution)
  assert not hostmem.cpu_backend_expected()
  installed.clear()
  assert hostmem.cpu_backend_expected()
