"""Named starting points: weights a benchmark makes once, on a source dataset, for variants to
start from (``variant(..., init=NAME)``).

    config.starts = {
        "reptile": starts.start("reptile", dataset="mnist5k",
                                args={"ways": 5, "shots": 5, "meta_steps": 60}),
        "source_ft": starts.start("train", dataset="mnist5k",
                                  overrides=(("train.num_steps", 600),)),
    }
    v.meta_finetune = harness.variant("train", init="reptile", ...)

A start's experiment is the benchmark's base experiment on ``dataset`` (its ``train_split``; the
target's cells and splits are never read), with ``dataset_overrides[dataset]`` and then the
start's own ``overrides`` applied, beginning from the benchmark's pretrained weights
(``init='pretrained'``) or from random ones (``init='scratch'``). Kinds:

- ``'train'``: the trainer on the source (``train.train_and_evaluate``), i.e. supervised
  intermediate training, the control a meta-learned start has to beat.
- ``'reptile'``: first-order meta-learning (``jtransfer.methods.reptile``, Nichol et al. 2018) on
  N-way K-shot episodes of the source's examples (eval preprocessing, deterministic in the
  start's ``train.seed`` and the episode), with the base experiment's model, freezing rules,
  optimizer (its schedule spans ``inner_steps``; fresh state per episode) and loss. ``ARGS``
  lists its arguments.

Each start runs in ``WORKDIR/starts/NAME`` and is reused once its ``result.json`` exists (written
last); its ``export/`` (the head is the source's: the variants' ``model.init_skip`` drops it) is
the ``model.init`` of the variants that name it. Its one-off cost is in ``result.json`` (wall
seconds, examples seen), not in the variants' rows.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, TextIO

from ml_collections import config_dict
import numpy as np

from jtransfer import methods, models, weights
from jtransfer import workdir as wd
from jtransfer.benchmark import features
from jtransfer.methods import reptile
from jtransfer.train import trainer
from jtransfer.train.config import apply_overrides

KINDS = ("train", "reptile")
INITS = ("pretrained", "scratch")
# Reptile's arguments and defaults. classes: the source classes episodes draw from (() = all).
ARGS = {"ways": 5, "shots": 5, "meta_batch": 4, "inner_steps": 5, "meta_steps": 100,
        "meta_lr": 1.0, "anneal": True, "head_init": "zero", "classes": ()}


def start(kind: str, *, dataset: str, init: str = "pretrained", overrides=(),
          args=None) -> config_dict.ConfigDict:
  """One entry of a benchmark config's ``starts`` (see the module docstring)."""
  s = config_dict.ConfigDict()
  s.kind = kind
  s.dataset = dataset
  s.init = init
  s.overrides = tuple(overrides)
  s.args = dict(args or {})
  return s


def _args(s) -> dict:
  return {**ARGS, **dict(s.args)}


def check(config) -> None:
  """Fails on the first bad start before anything runs (kind, init, arguments, override key)."""
  for name, s in dict(config.get("starts") or {}).items():
    where = f"starts.{name}"
    if name in INITS:
      raise ValueError(f"{where}: the names {INITS} are taken (the built-in starts)")
    if s.kind not in KINDS:
      raise ValueError(f"{where}.kind={s.kind!r}; known: {', '.join(KINDS)}")
    if s.init not in INITS:
      raise ValueError(f"{where}.init={s.init!r}; known: {', '.join(INITS)}")
    if s.kind == "train" and s.args:
      raise ValueError(f"{where}: kind 'train' takes no args (use overrides); got {sorted(s.args)}")
    if s.kind == "reptile":
      bad = sorted(set(dict(s.args)) - set(ARGS))
      if bad:
        raise ValueError(f"{where}: reptile takes {sorted(ARGS)}; got {bad}")
      a = _args(s)
      for key in ("ways", "shots", "meta_batch", "inner_steps", "meta_steps"):
        if not isinstance(a[key], int) or a[key] < 1:
          raise ValueError(f"{where}: {key}={a[key]!r} must be an int >= 1")
      if a["ways"] < 2:
        raise ValueError(f"{where}: ways={a['ways']} must be >= 2")
      if not 0 < float(a["meta_lr"]) <= 1:
        raise ValueError(f"{where}: meta_lr={a['meta_lr']!r} must be in (0, 1]")
      if a["head_init"] not in reptile.HEAD_INITS:
        raise ValueError(f"{where}: head_init={a['head_init']!r}; known {reptile.HEAD_INITS}")
      if a["head_init"] == "zero" and a["inner_steps"] < 2:
        raise ValueError(f"{where}: a zero head passes no gradient on the first inner step; "
                         "use inner_steps >= 2")
    source_config(config, name, pretrained="PRETRAINED")


def source_config(config, name: str, *, pretrained: str):
  """The experiment of start ``name`` (see the module docstring)."""
  s = config.starts[name]
  cfg = config.base.copy_and_resolve_references()
  cfg.data.dataset = s.dataset
  cfg.data.shots = None
  cfg.model.init = pretrained if s.init == "pretrained" else ""
  apply_overrides(cfg, config.get("dataset_overrides", {}).get(s.dataset, ()),
                  f"dataset_overrides[{s.dataset!r}]")
  apply_overrides(cfg, s.overrides, f"starts.{name}.overrides")
  return cfg


def ensure(config, workdir: str, *, pretrained: str, stream: TextIO,
           clock: Callable[[], float] = time.monotonic) -> dict[str, str]:
  """Makes every start that has no result yet; returns ``{name: export dir}``."""
  out = {}
  for name in dict(config.get("starts") or {}):
    run_dir = os.path.join(workdir, "starts", name)
    rd = wd.RunDir(run_dir)
    out[name] = rd.export
    if os.path.exists(rd.result_json):
      print(f"[benchmark] reusing start {name!r} ({out[name]})", file=stream, flush=True)
      continue
    s = config.starts[name]
    cfg = source_config(config, name, pretrained=pretrained)
    print(f"[benchmark] start {name!r}: {s.kind} on {s.dataset} from {s.init} -> {out[name]}",
          file=stream, flush=True)
    t0 = clock()
    if s.kind == "train":
      result = trainer.train_and_evaluate(cfg, run_dir, task=methods.task_for(cfg))
      facts = {"source_top1": float(result["eval"]["top1"]), "steps": int(result["step"]),
               "examples_seen": int(result["step"]) * int(cfg.data.batch_size)}
    else:
      facts = _reptile(cfg, run_dir, _args(s), where=f"starts.{name}")
    facts.update(kind=s.kind, dataset=s.dataset, init=s.init, wall_s=clock() - t0)
    rd.write_result(facts)
    print(f"[benchmark] start {name!r} done in {facts['wall_s']:.0f} s: "
          f"{json.dumps({k: v for k, v in facts.items() if k != 'wall_s'}, default=str)}",
          file=stream, flush=True)
  return out


def _reptile(cfg: Any, run_dir: str, a: dict, *, where: str) -> dict:
  x, y = features.image_arrays(cfg.data, cfg.data.train_split)
  classes = np.asarray(a["classes"]) if len(a["classes"]) else np.unique(y)
  missing = sorted(set(classes.tolist()) - set(np.unique(y).tolist()))
  if missing:
    raise ValueError(f"{where}: classes {missing} have no example in "
                     f"{cfg.data.dataset}/{cfg.data.train_split}")
  run = trainer.plain_phase(cfg, a["ways"], x.shape[1:], total_steps=a["inner_steps"],
                            where=where)
  sample = reptile.episode_sampler(x, y, classes=classes, ways=a["ways"], shots=a["shots"],
                                seed=int(cfg.train.seed), meta_batch=a["meta_batch"])
  params, stats, losses = reptile.reptile(
      run.variables["params"], run.variables["batch_stats"], loss_fn=run.loss_fn, tx=run.tx,
      mask=run.mask, sample=sample, inner_steps=a["inner_steps"], meta_steps=a["meta_steps"],
      meta_lr=float(a["meta_lr"]), anneal=bool(a["anneal"]),
      head=models.get_spec(cfg.model.arch).head, head_init=a["head_init"],
      episode_vmap=False, seed=int(cfg.train.seed))
  if not np.all(np.isfinite(losses)):
    t = int(np.argwhere(~np.isfinite(losses))[0][0])
    raise FloatingPointError(f"{where}: non-finite inner loss at meta step {t} ({run_dir})")
  os.makedirs(run_dir, exist_ok=True)
  rd = wd.RunDir(run_dir)
  rd.write_config(cfg)
  np.save(os.path.join(run_dir, "inner_losses.npy"), losses)
  meta_json = models.meta(cfg.model, num_classes=a["ways"], class_names=[], step=a["meta_steps"])
  weights.save({"params": params, "batch_stats": stats}, rd.export, metadata=meta_json,
               overwrite=True)
  # The loss after adaptation (last inner step), over the first and last tenth of meta training:
  # what Reptile is meant to lower.
  tenth = max(1, len(losses) // 10)
  return {"meta_steps": a["meta_steps"], "episodes": a["meta_steps"] * a["meta_batch"],
          "examples_seen": a["meta_steps"] * a["meta_batch"] * a["inner_steps"] * a["ways"]
          * a["shots"],
          "adapted_loss_first": float(losses[:tenth, :, -1].mean()),
          "adapted_loss_last": float(losses[-tenth:, :, -1].mean()),
          "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in a.items()}}


__all__ = ["ARGS", "INITS", "KINDS", "check", "ensure", "source_config", "start"]
