"""The benchmark's 'fedavg' kind: a cell's examples split across clients, trained with FedAvg.

    v.fedavg_full = schema.variant("fedavg", freezing=optim.get_freezing_config("full_ft"),
                                    args={"num_clients": 4, "alpha": 0.0, "local_steps": 3})

The cell's config is built as for 'train' (same model, freezing rules, optimizer, loss), and the
cell's training examples (the few-shot draw from the pool, with the EVAL preprocessing: no random
crop) are split across ``num_clients`` clients: IID for ``alpha = 0``, else label-skewed with a
Dirichlet(α) (``fedavg.dirichlet_partition``). Each round every client runs ``local_steps``
steps of ``data.batch_size // num_clients`` examples (``fedavg.make_fedavg_round``: the
trainer's step function on the same loss, optimizer and trainable mask), and the server averages
the trainable parameters by client example counts. ``train.num_steps // local_steps`` rounds, so
the clients together see as many examples as the centralised 'train' cell of the same config
(``num_steps × batch_size``). The global model is exported like a trainer run's (``export/``,
``config.json``), so the harness evaluates it the same way. Frozen parameters never move and are
never sent: ``bytes_per_round`` is what the clients send.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from jtransfer import models, weights
from jtransfer import workdir as wd
from jtransfer.benchmark import cost, evaluation, features
from jtransfer.benchmark.kinds.base import Context, Kind
from jtransfer.benchmark.kinds.trained import test_export
from jtransfer.methods import fedavg
from jtransfer.train import trainer
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

ARGS = {"num_clients": 4, "alpha": 0.0, "local_steps": 3, "bn_stats": "average"}


def check_args(args: dict, where: str) -> None:
  unknown = sorted(set(args) - set(ARGS))
  if unknown:
    raise ValueError(f"{where}: fedavg takes {sorted(ARGS)}; got {unknown}")
  a = {**ARGS, **args}
  if not isinstance(a["num_clients"], int) or a["num_clients"] < 1:
    raise ValueError(f"{where}: num_clients={a['num_clients']!r} must be an int >= 1")
  if not isinstance(a["local_steps"], int) or a["local_steps"] < 1:
    raise ValueError(f"{where}: local_steps={a['local_steps']!r} must be an int >= 1")
  if float(a["alpha"]) < 0:
    raise ValueError(f"{where}: alpha={a['alpha']!r} must be >= 0 (0 = IID)")
  if a["bn_stats"] not in fedavg.BN_STATS:
    raise ValueError(f"{where}: bn_stats={a['bn_stats']!r}; known {fedavg.BN_STATS}")


_COSTS: dict[str, dict] = {}  # per program (cost.program_key and the federation's shape)


def _costs(cfg, run, fed_round, state, batches, weights, rng, a: dict) -> dict:
  """``{step_flops, peak_bytes}``: XLA's flops of ONE client step (a round's program runs its
  steps in loops, whose bodies cost_analysis counts once) and the round program's peak memory
  (every client's copy included)."""
  key = json.dumps([cost.program_key(cfg), a["num_clients"], a["local_steps"], a["bn_stats"]])
  if key not in _COSTS:
    one = jax.tree.map(lambda v: v[0, 0], batches)
    start = TrainState.create(params=state.params, batch_stats=state.batch_stats, tx=run.tx)
    step = jax.jit(make_train_step(run.loss_fn, run.tx, run.mask))
    _COSTS[key] = {"step_flops": cost.step_cost(step.lower(start, one, rng))["flops"],
                   "peak_bytes": cost.step_cost(fed_round.lower(state, batches, weights,
                                                                rng))["peak_bytes"]}
  return _COSTS[key]


def train(cfg: Any, run_dir: str, x: np.ndarray, y: np.ndarray, *, num_classes: int,
          **args) -> dict:
  """FedAvg on ``(x, y)`` under ``cfg``; writes ``run_dir/{config.json,export/}``.

  Returns ``{'variables', 'rounds', 'bytes_per_round', 'trainable_params', 'clients',
  'train_gflops', 'peak_bytes'}``: training GFLOPs = one client step's × steps × clients (the
  server's averaging not counted), peak memory = the compiled round's.
  """
  a = {**ARGS, **args}
  k, local = a["num_clients"], a["local_steps"]
  batch = cfg.data.batch_size // k
  rounds = cfg.train.num_steps // local
  if batch < 1 or rounds < 1:
    raise ValueError(f"fedavg: batch_size {cfg.data.batch_size} / {k} clients and num_steps "
                     f"{cfg.train.num_steps} / local_steps {local} must both be >= 1")
  seed = int(cfg.train.seed)
  run = trainer.plain_phase(cfg, num_classes, x.shape[1:], total_steps=rounds * local,
                            where="fedavg")
  variables, mask = run.variables, run.mask
  parts = (fedavg.iid_partition(len(y), k, seed=seed) if not float(a["alpha"]) else
           fedavg.dirichlet_partition(y, k, alpha=float(a["alpha"]), seed=seed))
  fed_round = fedavg.make_fedavg_round(run.loss_fn, run.tx, mask, local_steps=local,
                                          bn_stats=a["bn_stats"], client_vmap=False)
  state = fedavg.init_state(variables["params"], variables["batch_stats"], num_clients=k,
                               bn_stats=a["bn_stats"])
  rng = jax.random.key(seed)
  for r in range(rounds):
    b = fedavg.client_batches({"image": x, "label": y}, parts, batch_size=batch,
                                 local_steps=local, round_index=r, seed=seed)
    if r == 0:
      costs = _costs(cfg, run, fed_round, state, b, fedavg.client_weights(parts), rng, a)
    state, metrics = fed_round(state, b, fedavg.client_weights(parts), rng)
    if not np.isfinite(float(metrics["loss"])):
      raise FloatingPointError(f"fedavg: non-finite loss in round {r} ({run_dir})")
  out = {"params": jax.tree.map(np.asarray, state.params),
         "batch_stats": jax.tree.map(np.asarray, state.batch_stats)}
  os.makedirs(run_dir, exist_ok=True)
  rd = wd.RunDir(run_dir)
  rd.write_config(cfg)
  meta = models.meta(cfg.model, num_classes=num_classes, class_names=[], step=rounds * local)
  weights.save(out, rd.export, metadata=meta, overwrite=True)
  sent = fedavg.bytes_per_round(variables["params"], mask, num_clients=k,
                                   batch_stats=variables["batch_stats"],
                                   bn_stats=a["bn_stats"])["total"]
  facts = {"rounds": rounds, "clients": [len(p) for p in parts], "bytes_per_round": int(sent),
           "trainable_params": cost.count_params(variables["params"], mask=mask),
           "train_gflops": cost.train_gflops(costs["step_flops"], rounds * local * k),
           "peak_bytes": costs["peak_bytes"]}
  wd.atomic_write_text(os.path.join(run_dir, "fedavg.json"), json.dumps(facts))
  return {"variables": out, **facts}


class FedAvg(Kind):
  """'fedavg': ``train`` on the cell's few-shot draw; exported and tested like a trainer run."""

  name = "fedavg"
  arg_names = frozenset(ARGS)
  exports = True

  def check(self, config, name, v, grid, where):
    for p in grid:
      check_args({**dict(v.args), **p}, where)

  def fit(self, ctx: Context, cell, point, splits) -> dict:
    run_dir = ctx.run_dir_of(cell, point)
    cfg = ctx.cell_config(cell, splits=splits)
    x, y = evaluation.few(cell, *features.image_arrays(cfg.data, splits.pool))
    n = evaluation.num_classes(cfg.data)
    out = train(cfg, run_dir, x, y, num_classes=n, **ctx.args(cell, point))
    val = evaluation.evaluate_variables(cfg.model, n, out["variables"], cfg.data, splits.val)
    return {"val": val, "run_dir": run_dir, "steps": int(cfg.train.num_steps),
            **{k: out[k] for k in ("rounds", "bytes_per_round", "trainable_params",
                                   "train_gflops", "peak_bytes")}}

  def test(self, ctx: Context, cell, chosen, splits) -> dict:
    return test_export(ctx, cell, chosen, splits)

  def finish_row(self, ctx: Context, cell, chosen, row) -> None:
    row["bytes_per_round"] = chosen["bytes_per_round"]


__all__ = ["ARGS", "FedAvg", "check_args", "train"]
