"""Federated fine-tuning with FedAvg (McMahan et al., AISTATS 2017): local steps, a weighted mean.

    parts = fedavg.dirichlet_partition(labels, num_clients=8, alpha=0.5, seed=0)
    fed_round = fedavg.make_fedavg_round(loss_fn, tx, mask, local_steps=5)
    state = fedavg.init_state(params, batch_stats, num_clients=8)
    for r in range(rounds):
      batches = fedavg.client_batches({"image": x, "label": y}, parts, batch_size=32,
                                         local_steps=5, round_index=r, seed=0)
      state, metrics = fed_round(state, batches, fedavg.client_weights(parts), rng)
    variables = {"params": state.params, "batch_stats": state.batch_stats}   # the global model
    fedavg.bytes_per_round(params, mask, num_clients=8, batch_stats=batch_stats)

A round: every client starts from the global parameters, runs ``local_steps`` of the SAME train
step the trainer uses (``train.step.make_train_step`` with the same loss, optimizer and trainable
mask) on batches of its own shard, and the server replaces the TRAINABLE parameters by the mean of
the clients', weighted by the clients' example counts. Frozen parameters are never sent and never
move: they are taken from the server's copy, bitwise.

Clients are the leading axis of a stacked ``TrainState``; one code path runs them: one
``jax.jit`` of a ``jax.shard_map`` over a ``Mesh`` of devices with the axis ``'clients'``. Each
device trains its share of the clients (``jax.vmap`` over them, or ``jax.lax.map`` with
``client_vmap=False``; a device holding a single client runs it unbatched), and the per-device
weighted sums meet in a ``psum``. On one device that is a plain vmap and a sum; on several, an
all-reduce. The mesh takes the largest divisor of the number of clients that is at most the
device count.

Choices, and why:

* **Optimizer state is reset every round** (standard FedAvg: clients are stateless, and
  momentum or Adam moments of another round's parameters are stale). Learning-rate schedules
  follow the global count of local steps (``round × local_steps``).
* **Fixed local steps per client**, not McMahan's E epochs: every client does the same work per
  round (``local_steps`` batches of ``batch_size``, drawn without replacement from its shard
  until it is exhausted, then again); the mean is still weighted by shard size n_k.
* **BatchNorm statistics** (``bn_stats``): ``'average'`` (default) sends them like parameters
  and averages them with the same weights, so one global model exists; ``'local'`` keeps each
  client's statistics on the client across rounds (FedBN, Li et al. ICLR 2021, for statistics
  only: BatchNorm scale/bias are still averaged when trainable) and sends none; the global
  ``batch_stats`` is then the weighted mean of the clients' (for evaluating or exporting one
  model; not counted per round). Statistics of frozen BatchNorms never change and are never sent.
  Which statistics are "trainable" is ``stats_mask``; by default those of modules whose
  ``scale``/``bias`` parameters are trainable (right for ``bn_mode='frozen'``; with
  ``bn_mode='adapt'`` pass a mask of all True).
* Per client, the rng of the step is ``client_rngs(rng, round, K)[k]``; the step folds in the
  step count as usual, so dropout differs across clients, rounds and steps.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from jtransfer.optim import rules as rules_lib
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

BN_STATS = ("average", "local")
CLIENTS = "clients"


# ---------------------------------------------------------------------------------------------
# Partitions and client data.

def iid_partition(num_examples: int, num_clients: int, *, seed: int) -> list[np.ndarray]:
  """A seeded shuffle of ``range(num_examples)`` cut into ``num_clients`` near-equal shards
  (sorted indices): disjoint and covering."""
  if not 1 <= num_clients <= num_examples:
    raise ValueError(f"Cannot split {num_examples} examples over {num_clients} clients")
  perm = np.random.default_rng(seed).permutation(num_examples)
  return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(labels, num_clients: int, *, alpha: float, seed: int, min_size: int = 1,
                        max_tries: int = 100) -> list[np.ndarray]:
  """Label-skewed shards (Hsu et al. 2019): each class's examples are split over the clients in
  proportions drawn from Dirichlet(α·1). Small α: each client sees few classes; large α: IID.

  Disjoint and covering, sorted indices, deterministic in ``seed``. Draws are repeated (from the
  same seeded generator) until every client holds at least ``min_size`` examples; ValueError
  after ``max_tries``.
  """
  if alpha <= 0:
    raise ValueError(f"alpha must be > 0, got {alpha}")
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  for _ in range(max_tries):
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
      rows = rng.permutation(np.flatnonzero(labels == c))
      share = rng.dirichlet(np.full(num_clients, float(alpha)))
      cuts = np.round(np.cumsum(share)[:-1] * len(rows)).astype(int)
      for k, chunk in enumerate(np.split(rows, cuts)):
        parts[k].append(chunk)
    shards = [np.sort(np.concatenate(p)) for p in parts]
    if min(len(s) for s in shards) >= min_size:
      return shards
  raise ValueError(f"No Dirichlet(alpha={alpha}) draw in {max_tries} gave every one of "
                   f"{num_clients} clients >= {min_size} examples; raise alpha or lower min_size")


def client_weights(parts: Sequence[np.ndarray]) -> np.ndarray:
  """The clients' example counts n_k (float32): FedAvg's aggregation weights."""
  return np.asarray([len(p) for p in parts], np.float32)


def client_batches(arrays: dict, parts: Sequence[np.ndarray], *, batch_size: int,
                   local_steps: int, round_index: int, seed: int) -> dict:
  """``{name: [K, local_steps, batch_size, ...]}``: each client's batches for one round.

  Client k draws from its shard with ``default_rng([seed, round_index, k])``: a permutation of the
  shard, then another when it runs out, so no example repeats before the shard is used up.
  """
  need = local_steps * batch_size
  out = {name: [] for name in arrays}
  for k, part in enumerate(parts):
    if not len(part):
      raise ValueError(f"Client {k} has no examples")
    rng = np.random.default_rng([seed, round_index, k])
    idx = np.concatenate([rng.permutation(part) for _ in range(math.ceil(need / len(part)))])
    idx = idx[:need].reshape(local_steps, batch_size)
    for name, a in arrays.items():
      out[name].append(np.asarray(a)[idx])
  return {name: np.stack(v) for name, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Communication.

def _nbytes(x) -> int:
  return int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize


def default_stats_mask(mask, batch_stats):
  """True for the statistics of a module (``M/mean``, ``M/var``) whose ``M/scale`` or ``M/bias``
  parameter is trainable in ``mask``; False otherwise (frozen BatchNorms)."""
  trainable = {}
  for path, m in zip(rules_lib.param_paths(mask), jax.tree.leaves(mask)):
    module, _, leaf = path.rpartition("/")
    if leaf in ("scale", "bias"):
      trainable[module] = trainable.get(module, False) or bool(m)
  return rules_lib.map_paths(lambda path, _: trainable.get(path.rpartition("/")[0], False),
                             batch_stats)


def bytes_per_round(params, mask, *, num_clients: int, batch_stats=None,
                    bn_stats: str = "average", stats_mask=None) -> dict[str, int]:
  """Bytes sent in one round, down (server → clients) and up (clients → server):
  ``params`` = trainable parameter bytes × 2 × clients; ``batch_stats`` = the same for the
  averaged statistics (0 with ``bn_stats='local'``); ``total``; and ``frozen_not_sent``, the
  frozen parameter bytes a client holds already and never receives (per client)."""
  _check_bn(bn_stats)
  leaves, masks = jax.tree.leaves(params), [bool(m) for m in jax.tree.leaves(mask)]
  trainable = sum(_nbytes(x) for x, m in zip(leaves, masks) if m)
  frozen = sum(_nbytes(x) for x, m in zip(leaves, masks) if not m)
  stats = 0
  if batch_stats is not None and bn_stats == "average":
    smask = stats_mask if stats_mask is not None else default_stats_mask(mask, batch_stats)
    stats = sum(_nbytes(x) for x, m in zip(jax.tree.leaves(batch_stats), jax.tree.leaves(smask))
                if m)
  return {"params": 2 * num_clients * trainable, "batch_stats": 2 * num_clients * stats,
          "total": 2 * num_clients * (trainable + stats), "frozen_not_sent": frozen}


# ---------------------------------------------------------------------------------------------
# The round.

@flax.struct.dataclass
class FedState:
  """The server's state. ``params``/``batch_stats``: the global model; ``client_stats``: with
  ``bn_stats='local'``, each client's statistics stacked on a leading client axis, else None."""
  round: jax.Array
  params: Any
  batch_stats: Any
  client_stats: Any = None


def init_state(params, batch_stats, *, num_clients: int, bn_stats: str = "average") -> FedState:
  """Round 0: the global model, and with ``bn_stats='local'`` one copy of its statistics per
  client."""
  _check_bn(bn_stats)
  clients = None
  if bn_stats == "local":
    clients = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients, *jnp.shape(x))),
                           batch_stats)
  return FedState(round=jnp.asarray(0, jnp.int32), params=params, batch_stats=batch_stats,
                  client_stats=clients)


def client_rngs(rng: jax.Array, round_index, num_clients: int) -> jax.Array:
  """The step rng of each client in a round."""
  return jax.random.split(jax.random.fold_in(rng, round_index), num_clients)


def _check_bn(bn_stats: str):
  if bn_stats not in BN_STATS:
    raise ValueError(f"Unknown bn_stats {bn_stats!r}; known: {', '.join(BN_STATS)}")


def client_mesh(num_clients: int, devices: Sequence[Any] | None = None) -> Mesh:
  """A 1-D ``'clients'`` mesh over the largest number of ``devices`` (default: all) that divides
  ``num_clients``."""
  devices = list(jax.devices() if devices is None else devices)
  n = max(d for d in range(1, len(devices) + 1) if num_clients % d == 0)
  return Mesh(np.asarray(devices[:n]), (CLIENTS,))


def _weighted_sum(w, stacked):
  # Multiply-and-sum rather than a dot: a dot may run in reduced precision on accelerators, and a
  # client of weight 1.0 comes back bitwise.
  return jnp.sum(w.reshape(-1, *([1] * (stacked.ndim - 1))) * stacked, axis=0).astype(stacked.dtype)


def make_fedavg_round(loss_fn: Callable, tx: optax.GradientTransformation, mask, *,
                      local_steps: int, bn_stats: str = "average", stats_mask=None,
                      devices: Sequence[Any] | None = None, client_vmap: bool = True
                      ) -> Callable:
  """``fed_round(state, batches, weights, rng) -> (state, metrics)``, one FedAvg round;
  ``fed_round.lower(...)`` (same arguments) lowers its program without running it.

  Args:
    loss_fn, tx, mask: as for ``train.step.make_train_step``; the clients run that very step.
    local_steps: train steps per client per round.
    bn_stats: 'average' or 'local' (see the module docstring).
    stats_mask: tree of bools like ``batch_stats``: the statistics averaged with
      ``bn_stats='average'``; default ``default_stats_mask``.
    devices: the devices of the ``'clients'`` mesh (default: all).
    client_vmap: a device's clients run as one ``jax.vmap`` (True) or one after another with
      ``jax.lax.map`` (False): the same numbers up to rounding, less memory, and on a CPU much
      faster for convolutions, whose per-client weights a vmap turns into grouped convolutions.

  ``batches``: ``{name: [K, local_steps, B, ...]}`` (``client_batches``); ``weights``: [K] example
  counts (``client_weights``). Metrics: the clients' loss-function metrics averaged over local
  steps, as the weighted mean over clients, plus ``client_loss`` [K].
  """
  _check_bn(bn_stats)
  if not isinstance(local_steps, int) or local_steps < 1:
    raise ValueError(f"local_steps must be an int >= 1, got {local_steps!r}")
  step = make_train_step(loss_fn, tx, mask)
  mask_leaves = [bool(m) for m in jax.tree.leaves(mask)]

  def local(start: TrainState, stats, batches, rng):
    state, metrics = jax.lax.scan(lambda s, b: step(s, b, rng), start.replace(batch_stats=stats),
                                  batches)
    return state.params, state.batch_stats, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  def device_round(start: TrainState, stats, batches, w, rngs):
    """One device's clients (a leading axis of k): local training, then the partial weighted sums
    that a psum over the mesh turns into FedAvg's means."""
    k = w.shape[0]
    stats_axis = 0 if bn_stats == "local" else None
    server = start
    # The server's state is the same on every device; each client's copy then diverges.
    start = jax.lax.pcast(start, (CLIENTS,), to="varying")
    if stats_axis is None:
      stats = jax.lax.pcast(stats, (CLIENTS,), to="varying")
    if k == 1:
      # A device holding one client runs the step unbatched: bitwise the trainer's step (a vmap
      # of size 1 would change the last bits of batched reductions).
      squeeze = lambda tree: jax.tree.map(lambda x: x[0], tree)
      out = local(start, squeeze(stats) if stats_axis == 0 else stats, squeeze(batches), rngs[0])
      params_c, stats_c, metrics = jax.tree.map(lambda x: x[None], out)
    elif client_vmap:
      params_c, stats_c, metrics = jax.vmap(local, in_axes=(None, stats_axis, 0, 0))(
          start, stats, batches, rngs)
    elif stats_axis == 0:
      params_c, stats_c, metrics = jax.lax.map(lambda a: local(start, *a), (stats, batches, rngs))
    else:
      params_c, stats_c, metrics = jax.lax.map(lambda a: local(start, stats, *a), (batches, rngs))
    total = lambda tree: jax.tree.map(lambda x: jax.lax.psum(_weighted_sum(w, x), CLIENTS), tree)

    theta = jax.tree.leaves(server.params)
    params = jax.tree.unflatten(jax.tree.structure(server.params), [
        jax.lax.psum(_weighted_sum(w, c), CLIENTS) if m else g
        for g, c, m in zip(theta, jax.tree.leaves(params_c), mask_leaves)])

    def stats_mean(old, new):
      # Statistics no client changed (a frozen BatchNorm) keep their bits; the weighted mean of
      # equal values could round differently.
      changed = jax.lax.psum(jnp.any(new != old[None], axis=0).astype(jnp.int32), CLIENTS)
      return jnp.where(changed > 0, jax.lax.psum(_weighted_sum(w, new), CLIENTS), old)

    old_stats = server.batch_stats
    if bn_stats == "local":
      new_stats = jax.tree.map(stats_mean, old_stats, stats_c)
    else:
      smask = stats_mask if stats_mask is not None else default_stats_mask(mask, old_stats)
      new_stats = jax.tree.map(lambda o, n, m: stats_mean(o, n) if m else o, old_stats, stats_c,
                               smask)
    return params, new_stats, stats_c, total(metrics), metrics["loss"]

  def round_fn(state: FedState, start: TrainState, batches, weights, rng, mesh: Mesh):
    num_clients = weights.shape[0]
    w = weights / jnp.sum(weights)
    local_stats = bn_stats == "local"
    stats = state.client_stats if local_stats else state.batch_stats
    by_client, replicated = P(CLIENTS), P()
    params, new_stats, client_stats, metrics, client_loss = jax.shard_map(
        device_round, mesh=mesh,
        in_specs=(replicated, by_client if local_stats else replicated, by_client, by_client,
                  by_client),
        out_specs=(replicated, replicated, by_client, replicated, by_client))(
            start, stats, batches, w, client_rngs(rng, state.round, num_clients))
    return (FedState(round=state.round + 1, params=params, batch_stats=new_stats,
                     client_stats=client_stats if local_stats else None),
            {**metrics, "client_loss": client_loss})

  compiled: dict[int, tuple] = {}

  def prepare(state: FedState, batches, weights, rng):
    num_clients = int(np.shape(weights)[0])
    if (state.client_stats is None) == (bn_stats == "local"):
      raise ValueError(f"bn_stats={bn_stats!r} but the state "
                       f"{'lacks' if state.client_stats is None else 'has'} client statistics: "
                       f"init_state(..., bn_stats={bn_stats!r})")
    if num_clients not in compiled:
      mesh = client_mesh(num_clients, devices)
      compiled[num_clients] = (
          jax.jit(lambda s, t, b, w, r: round_fn(s, t, b, w, r, mesh)),
          NamedSharding(mesh, P()), NamedSharding(mesh, P(CLIENTS)))
    fn, replicated, by_client = compiled[num_clients]
    # The clients' starting state is built here, outside the jit, exactly as the trainer builds
    # its own: traced inside, its constant optimizer state would be folded into the step and
    # change the last bits of the first update.
    start = TrainState.create(params=state.params, batch_stats=state.batch_stats, tx=tx,
                              step=int(state.round) * local_steps)
    # Every input is placed where the round wants it: no resharding on many devices, and the
    # same placement every round, so the first round's compilation is the only one.
    clients = state.client_stats
    state = jax.device_put(state.replace(client_stats=None), replicated).replace(
        client_stats=None if clients is None else jax.device_put(clients, by_client))
    return fn, (state, jax.device_put(start, replicated), jax.device_put(batches, by_client),
                jax.device_put(weights, by_client), jax.device_put(rng, replicated))

  def fed_round(state: FedState, batches, weights, rng):
    fn, args = prepare(state, batches, weights, rng)
    return fn(*args)

  def lower(state: FedState, batches, weights, rng):
    """The round's program for these inputs, lowered (for ``benchmark.cost.step_cost``)."""
    fn, args = prepare(state, batches, weights, rng)
    return fn.lower(*args)

  fed_round.lower = lower
  return fed_round


__all__ = ["BN_STATS", "CLIENTS", "FedState", "bytes_per_round", "client_batches", "client_mesh",
           "client_rngs", "client_weights", "default_stats_mask", "dirichlet_partition",
           "iid_partition", "init_state", "make_fedavg_round"]
