"""Data parallelism: one train step, run under ``jax.jit`` over a device mesh or under ``jax.pmap``.

    par = parallel.create("jit")            # or "pmap"; all devices of all processes
    state = par.put_state(host_state)       # replicated params / optimizer state
    step = par.compile(step_fn)             # step_fn(state, batch, extra) -> (state, metrics)
    state, metrics = step(state, par.put_batch(local_batch), par.put_extra(extra))
    host_state = par.checkpointable(state)  # the mesh-replicated form Orbax saves and restores

Both strategies take process-LOCAL numpy batches (each process reads its own shard) and agree on
the global batch: the processes' shards laid end to end in process order.

* ``MeshParallel`` (the default): ``jax.jit`` over ``Mesh(jax.devices(), ('data',))``; the batch is
  sharded on 'data', everything else replicated, so BatchNorm statistics and gradient means are
  over the global batch by construction (and FSDP is a change of ``state_sharding`` only).
* ``PmapParallel``: the same step under ``jax.pmap(axis_name='batch')``; the step function averages
  gradients with ``lax.pmean`` over ``axis_name``, and the model is built with
  ``bn_axis_name=par.axis_name`` so its BatchNorms average statistics across replicas.

``initialize_distributed`` starts ``jax.distributed`` from the config or the environment.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

AXIS = "data"         # mesh axis of the batch (jit)
PMAP_AXIS = "batch"   # pmap axis name, also used for cross-replica BatchNorm


def initialize_distributed(cfg: Any) -> bool:
  """Calls ``jax.distributed.initialize`` when the config or the environment asks for it.

  ``cfg`` is ``config.train.distributed``: ``coordinator_address`` ('' = from the environment),
  ``num_processes`` and ``process_id`` (-1 = from the environment), ``auto`` (initialize with no
  arguments, as on Cloud TPU pods and SLURM, where JAX discovers everything). The environment
  variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` stand in for the
  fields. ``cpu_collectives`` (e.g. 'gloo') selects the CPU collectives implementation, needed for
  multi-process runs on CPU. Returns whether it initialized; a second call is a no-op.
  """
  if jax.distributed.is_initialized():
    return False
  address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  num = cfg.num_processes if cfg.num_processes >= 0 else int(os.environ.get("JAX_NUM_PROCESSES", -1))
  pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", -1))
  if cfg.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
  if address:
    if num < 1 or pid < 0:
      raise ValueError(f"Distributed coordinator {address!r} given without num_processes/process_id "
                       f"(got {num}, {pid}); set config.train.distributed.* or JAX_NUM_PROCESSES/JAX_PROCESS_ID")
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return True
  if cfg.auto:
    jax.distributed.initialize()
    return True
  return False


def _global_from_host(tree: Any, sharding: NamedSharding) -> Any:
  """Puts host values that are identical on every process onto a (global) sharding."""
  def put(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # already global: a reshard
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, tree)


class MeshParallel:
  """``jax.jit`` over a 1-D mesh of all devices: batch on 'data', state replicated."""
  kind = "jit"
  axis_name = None  # the step needs no collective: jit sees the global batch

  def __init__(self, devices=None):
    devices = np.asarray(devices if devices is not None else jax.devices())
    self.mesh = Mesh(devices, (AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(AXIS))
    self.num_devices = devices.size

  def put_state(self, tree: Any) -> Any:
    return _global_from_host(tree, self.replicated)

  put_extra = put_state

  def put_batch(self, local_batch: dict) -> dict:
    """Process-local numpy arrays -> global arrays sharded on 'data'."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
            for k, v in local_batch.items()}

  def compile(self, fn: Callable, *, donate: bool = True) -> Callable:
    """``fn(state, batch, extra) -> (state, out)``; out replicated."""
    return jax.jit(fn, in_shardings=(self.replicated, self.batch_sharding, self.replicated),
                   out_shardings=(self.replicated, self.replicated),
                   donate_argnums=(0,) if donate else ())

  def compile_eval(self, fn: Callable) -> Callable:
    """``fn(variables, batch) -> out``; out replicated (every process gets all of it)."""
    return jax.jit(fn, in_shardings=(self.replicated, self.batch_sharding),
                   out_shardings=self.replicated)

  def fetch(self, out: Any) -> Any:
    return jax.tree.map(np.asarray, out)

  def checkpointable(self, state: Any) -> Any:
    return state

  def from_checkpoint(self, state: Any) -> Any:
    return state

  def state_sharding(self, abstract: Any) -> Any:
    return jax.tree.map(lambda _: self.replicated, abstract)


class PmapParallel:
  """``jax.pmap`` over all devices; each process feeds its local devices; cross-replica BatchNorm."""
  kind = "pmap"
  axis_name = PMAP_AXIS

  def __init__(self, devices=None):
    if devices is not None and len(devices) != jax.device_count():
      raise ValueError("pmap runs over all devices; a device subset needs parallel='jit'")
    self.local_devices = jax.local_devices()
    self.num_devices = jax.device_count()
    self._mesh_form = MeshParallel()  # what checkpoints hold: replicated over the mesh

  def put_state(self, tree: Any) -> Any:
    """One copy per local device, stacked on a leading axis (what pmap takes)."""
    n = len(self.local_devices)
    sharding = NamedSharding(Mesh(np.asarray(self.local_devices), ("local",)), P("local"))
    def rep(x):
      x = np.asarray(x)
      return jax.device_put(np.broadcast_to(x[None], (n,) + x.shape), sharding)
    return jax.tree.map(rep, tree)

  put_extra = put_state

  def put_batch(self, local_batch: dict) -> dict:
    n = len(self.local_devices)
    def split(x):
      x = np.asarray(x)
      if x.shape[0] % n:
        raise ValueError(f"Local batch {x.shape[0]} not divisible by {n} local devices")
      return x.reshape((n, x.shape[0] // n) + x.shape[1:])
    return {k: split(v) for k, v in local_batch.items()}

  def compile(self, fn: Callable, *, donate: bool = True) -> Callable:
    """``fn(state, batch, extra)`` under pmap; its model must be built with
    ``bn_axis_name=self.axis_name`` for cross-replica BatchNorm."""
    return jax.pmap(fn, axis_name=self.axis_name, donate_argnums=(0,) if donate else ())

  def compile_eval(self, fn: Callable) -> Callable:
    def gathered(variables, batch):
      out = fn(variables, batch)
      # Every device ends with the outputs of all devices (all processes), in device order.
      return jax.lax.all_gather(out, self.axis_name, tiled=True)
    return jax.pmap(gathered, axis_name=self.axis_name)

  def fetch(self, out: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x[0]), out)

  def checkpointable(self, state: Any) -> Any:
    host = jax.tree.map(lambda x: np.asarray(x[0]), state)
    return self._mesh_form.put_state(host)

  def from_checkpoint(self, state: Any) -> Any:
    return self.put_state(jax.tree.map(np.asarray, state))

  def state_sharding(self, abstract: Any) -> Any:
    return self._mesh_form.state_sharding(abstract)


def create(kind: str, devices=None) -> MeshParallel | PmapParallel:
  """'jit' (mesh of ``devices``, default all) or 'pmap' (all devices)."""
  if kind == "jit":
    return MeshParallel(devices)
  if kind == "pmap":
    return PmapParallel(devices)
  raise ValueError(f"Unknown config.train.parallel {kind!r}; known: 'jit', 'pmap'")


def sync(name: str) -> None:
  """A barrier across processes (no-op with one)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


__all__ = ["MeshParallel", "PmapParallel", "create", "initialize_distributed", "sync"]
