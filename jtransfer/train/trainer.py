"""The one trainer: ``train_and_evaluate(config, workdir)``, reused by every transfer strategy.

    from jtransfer.train import trainer
    result = trainer.train_and_evaluate(config, "workdirs/run1")   # same call again = resume
    result["eval"]["top1"]

A run writes into ``workdir``: ``config.json``, ``metrics.jsonl`` and ``tensorboard/`` (process 0),
``checkpoints/`` (Orbax, every process), ``export/`` (the final variables via ``weights.save``, with
``model.json``) and ``result.json`` (the exported step's eval metrics). Running the same command
again resumes from the latest checkpoint; a finished run only re-exports.

The pieces, each usable alone: ``build_model``, ``init_variables``, ``load_teacher``,
``make_train_step`` (the per-phase step under jit or pmap), ``evaluate.evaluate`` and
``checkpointing.Checkpointer``. The loop (``train_and_evaluate``) only strings them together.

Domain adaptation (``config.adapt``, docs/adapt.md): 'source_only' trains on ``config.data`` and
evaluates on the target; 'dann' adds a domain head behind a gradient reversal layer, fed with the
target's unlabeled images (``adapt.dann``). The domain head is trained but never exported.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import time
from typing import Any, Callable, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jtransfer import models, optim, weights
from jtransfer.adapt import dann
from jtransfer.train import checkpointing
from jtransfer.train import config as config_lib
from jtransfer.train import evaluate as evaluate_lib
from jtransfer.train import inputs
from jtransfer.train import losses
from jtransfer.train import parallel
from jtransfer.train import writers
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step as make_step_fn

MODEL_JSON = weights.MODEL_JSON
DOMAIN_HEAD = r"^domain_head/"  # DANN's domain classifier: trained, never loaded nor exported.


class NonFiniteLossError(FloatingPointError):
  """The loss (or gradient norm) became NaN or inf at ``step``; the message names it."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


# ---------------------------------------------------------------------------------------------
# Model, weights, teacher.


def build_model(model_cfg: Any, num_classes: int | None, *, frozen_bn: tuple[str, ...] = (),
                domain_head: tuple[int, ...] = ()):
  """``models.create`` from ``config.model`` (plus DANN's ``domain_head`` widths, when given)."""
  return models.create(model_cfg.arch, num_classes=num_classes, small_stem=model_cfg.small_stem,
                       dtype=model_cfg.dtype, frozen_bn=frozen_bn,
                       dropout_rate=model_cfg.dropout_rate, base_planes=model_cfg.base_planes,
                       domain_head=tuple(domain_head))


def domain_head_of(config: Any) -> tuple[int, ...]:
  """The domain head widths the model needs: ``adapt.domain_head`` with DANN, else none."""
  return tuple(config.adapt.domain_head) if config.adapt.method == "dann" else ()


def init_variables(model: Any, model_cfg: Any, image_shape: tuple[int, ...], seed: int, *,
                   extra_skip: tuple[str, ...] = ()) -> tuple[dict, str]:
  """Fresh variables (numpy), with ``model_cfg.init``'s weights merged in strictly when given.

  ``extra_skip``: more regexes kept at their fresh init besides ``model_cfg.init_skip`` (the
  trainer adds the domain head, which no pretrained weights have).

  The init key is an 'rbg' key: XLA compiles the init of a ResNet several times faster than with
  threefry, and the values are as deterministic in ``seed`` on a given backend.
  """
  rng = jax.random.key(seed, impl="rbg")
  variables = jax.jit(functools.partial(model.init, train=False))(
      rng, jnp.zeros((1, *image_shape), jnp.float32))
  variables = jax.tree.map(np.asarray, dict(variables))
  if not model_cfg.init:
    return variables, "random initialisation (model.init = '')"
  pretrained = weights.load(model_cfg.init, arch=model_cfg.arch)
  merged, report = weights.merge(variables, pretrained,
                                 skip=tuple(model_cfg.init_skip) + tuple(extra_skip))
  return merged, f"weights from {model_cfg.init}: {report}"


def load_teacher(distill_cfg: Any, dtype: str) -> tuple[Any, dict]:
  """The teacher ``(model, variables)`` of ``config.loss.distill`` (any arch).

  The arch is ``distill.arch`` or, when empty, the ``model.json`` that every export writes; the
  head size and stem come from the weights themselves.
  """
  path = distill_cfg.teacher
  arch, small_stem, base_planes = distill_cfg.arch, None, None
  meta_path = os.path.join(path, MODEL_JSON)
  if os.path.isfile(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
    arch = arch or meta["arch"]
    small_stem, base_planes = meta.get("small_stem"), meta.get("base_planes")
  if not arch:
    raise ValueError(f"Teacher {path}: set loss.distill.arch (no {MODEL_JSON} beside the weights)")
  variables = weights.load(path, arch=arch)
  params = variables["params"]
  if "fc" not in params:
    raise ValueError(f"Teacher {path} has no classification head 'fc'")
  stem = params["conv1"]["kernel"].shape  # (k, k, 3, base_planes)
  if small_stem is None:
    small_stem = stem[0] == 3
  if base_planes is None:
    base_planes = stem[-1]
  model = models.create(arch, num_classes=int(params["fc"]["kernel"].shape[-1]),
                        small_stem=bool(small_stem), dtype=dtype, base_planes=int(base_planes))
  return model, variables


def without_domain_head(variables: dict) -> dict:
  """``variables`` minus DANN's training-only ``domain_head`` subtree (what is exported)."""
  return {col: ({k: v for k, v in tree.items() if k != "domain_head"}
                if isinstance(tree, Mapping) else tree)
          for col, tree in variables.items()}


def with_trained_domain_head(phases: list, params: Any, *, head: str = r"^fc/",
                             strategy: str = "") -> list:
  """DANN: each phase's rules, with ``(^domain_head/, 1.0)`` in front where they would leave any
  domain head parameter frozen or unmatched (the classifier must learn for the reversal to mean
  anything). Raises ValueError when no phase trains any backbone parameter: the reversed gradient
  would then reach nothing, and DANN would be a source-only probe with extra work.
  """
  head_paths = [p for p in optim.param_paths(params) if re.search(DOMAIN_HEAD, p)]
  out, backbone_trains = [], False
  for phase in phases:
    rules = optim.parse_rules(phase.param_rules)
    first = [next((r for r in rules if re.search(r.pattern, p)), None) for p in head_paths]
    if any(r is None or r.frozen for r in first):
      phase = dataclasses.replace(phase, param_rules=((DOMAIN_HEAD, 1.0),) + tuple(rules))
    out.append(phase)
    labels = optim.label_params(params, phase.param_rules)
    backbone_trains |= any(
        label != optim.FROZEN and not re.search(DOMAIN_HEAD, path) and not re.search(head, path)
        for path, label in zip(optim.param_paths(labels), jax.tree.leaves(labels)))
  if not backbone_trains:
    raise ValueError(
        f"adapt.method='dann' with freezing.strategy={strategy!r}: no phase trains a backbone "
        f"parameter (only {head} and {DOMAIN_HEAD}), so the reversed domain gradient would change "
        "nothing. Use adapt.method='source_only' for a probe, or a strategy that trains the "
        "backbone (full_ft, last_stages, layerwise_decay, ...).")
  return out


def export_variables(variables: dict, directory: str, model_meta: dict) -> None:
  """Writes ``variables`` and ``model.json`` with ``weights.save`` (this process only), replacing an
  older export atomically: the dir is either the old export or the new one, never a mix."""
  weights.save(variables, directory, metadata=model_meta, overwrite=True)


# ---------------------------------------------------------------------------------------------
# One phase: model, optimizer and compiled step.


@dataclasses.dataclass
class PhaseSetup:
  index: int
  phase: optim.Phase
  model: Any
  tx: Any
  step: Callable  # compiled (state, global batch, extra) -> (state, metrics)


def make_train_step(config: Any, model: Any, tx: Any, mask: Any, par: Any, *,
                    teacher_model: Any = None) -> Callable:
  """The train step of one phase, compiled by ``par`` (jit over the mesh, or pmap).

  ``extra`` (replicated, passed at every call rather than baked into the program) holds the
  teacher's variables and the L2-SP anchor when those are used.
  """
  fz = config.freezing
  use_l2sp = bool(fz.l2sp_alpha or fz.l2sp_beta_head)
  use_dann = config.adapt.method == "dann"
  seed = int(config.train.seed)

  def step(state, batch, extra):
    l2sp = None
    if use_l2sp:
      l2sp = functools.partial(optim.l2sp_penalty, anchor_params=extra["anchor"],
                               alpha=fz.l2sp_alpha, beta_head=fz.l2sp_beta_head,
                               head_pattern=fz.head)
    if use_dann:
      loss_fn = dann.make_loss_fn(model, config.loss, l2sp=l2sp, trainable=mask,
                                  domain_weight=float(config.adapt.domain_weight))
    else:
      teacher = (teacher_model, extra["teacher"]) if teacher_model is not None else None
      loss_fn = losses.make_loss_fn(model, config.loss, teacher=teacher, l2sp=l2sp, trainable=mask)
    step_fn = make_step_fn(loss_fn, tx, mask, axis_name=par.axis_name,
                           accum_steps=config.optim.accum_steps,
                           ema_decay=config.optim.ema_decay)
    return step_fn(state, batch, jax.random.key(seed))

  return par.compile(step)


def setup_phase(config: Any, phases: list, index: int, params: Any, num_classes: int, par: Any,
                *, teacher_model: Any = None) -> PhaseSetup:
  """Labels, frozen BatchNorms, optimizer and compiled step of ``phases[index]``."""
  phase = phases[index]
  labels = optim.label_params(params, phase.param_rules)
  frozen_bn = optim.frozen_bn_patterns(labels, config.freezing.bn_mode)
  model = build_model(config.model, num_classes, frozen_bn=frozen_bn,
                      domain_head=domain_head_of(config))
  tx = optim.build_optimizer(config.optim, phase.param_rules, params,
                             total_steps=config.train.num_steps,
                             schedule_start=phase.schedule_start)
  step = make_train_step(config, model, tx, optim.trainable_mask(labels), par,
                         teacher_model=teacher_model)
  return PhaseSetup(index, phase, model, tx, step)


def create_state(variables: dict, tx: Any, *, ema: bool, step: int = 0) -> TrainState:
  return TrainState.create(params=variables["params"], batch_stats=variables.get("batch_stats", {}),
                           tx=tx, ema=ema, step=step)


def eval_variables(state: Any, *, use_ema: bool) -> dict:
  """The variables evaluated and exported: the EMA of the parameters when kept and asked for."""
  params = state.ema_params if use_ema and state.ema_params is not None else state.params
  return {"params": params, "batch_stats": state.batch_stats}


# ---------------------------------------------------------------------------------------------
# The loop.


def _check_batches(source: Any, par: Any) -> None:
  for name, b in (("batch_size", source.batch_size), ("eval_batch_size", source.eval_batch_size)):
    if b % par.num_devices:
      raise ValueError(f"data.{name}={b} (global) must be divisible by the {par.num_devices} devices")


def _summarize(pending: list[tuple[int, dict]]) -> dict:
  """Means of the per-step train metrics; raises NonFiniteLossError at the first bad step."""
  for step, m in pending:
    for key in ("loss", "grad_norm"):
      if key in m and not np.isfinite(m[key]):
        raise NonFiniteLossError(
            f"Non-finite {key} ({m[key]}) at step {step}: stopping. Checkpoints hold only steps "
            "before it; lower the learning rate, or check the data, and resume.", step)
  keys = pending[-1][1].keys()
  return {f"train/{k}": float(np.mean([m[k] for _, m in pending])) for k in keys}


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(writers.jsonable(obj), f, indent=1)
  os.replace(tmp, path)


def train_and_evaluate(config: Any, workdir: str, *, source: inputs.Source | None = None,
                       clock: Callable[[], float] = time.monotonic, stream=None) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and returns the result.

  Args:
    config: the experiment config (``train.config.get_base_config()`` and its experiment file).
    workdir: where the run's record, checkpoints and export go.
    source: the data; default ``inputs.from_config(config.data)``, or with ``config.adapt.method``
      set, ``adapt.dann.source_from_config(config)``. Tests pass an ``ArraySource`` (or a
      ``DomainAdaptationSource``).
    clock: seconds, for img/s and ETA (tests pass a fake one).
    stream: where the progress line goes (default stderr).

  Returns the content of ``result.json``: the exported step, its eval metrics, and run facts (or,
  when the cluster signals preemption, ``{'step', 'preempted': True}`` after a checkpoint).
  Raises ``NonFiniteLossError`` naming the step where the loss became NaN/inf.
  """
  parallel.initialize_distributed(config.train.distributed)
  config_lib.validate(config)
  tc = config.train
  pi, pc = jax.process_index(), jax.process_count()
  is_main = pi == 0
  workdir = os.path.abspath(workdir)
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))

  if source is None:
    source = (dann.source_from_config(config) if config.adapt.method
              else inputs.from_config(config.data))
  info = source.info
  if is_main and hasattr(source, "save_class_names"):
    source.save_class_names(workdir)
  num_classes = config.model.num_classes or info.num_classes
  par = parallel.create(tc.parallel)
  _check_batches(source, par)
  use_ema = config.optim.ema_decay is not None
  eval_ema = use_ema and tc.eval_ema

  writer = writers.MetricWriter(workdir, enabled=is_main, tensorboard=tc.tensorboard)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep,
                                    best_metric=tc.best_metric, best_mode=tc.best_mode)
  early = checkpointing.EarlyStopping(tc.best_metric, mode=tc.best_mode, patience=tc.patience)
  try:
    return _run(config, workdir, source, info, num_classes, par, writer, ckpt, early, clock,
                stream, use_ema=use_ema, eval_ema=eval_ema, pi=pi, pc=pc)
  except NonFiniteLossError as e:
    writer.write(e.step, {"error": str(e)})
    raise
  finally:
    ckpt.close()
    writer.close()


def _run(config, workdir, source, info, num_classes, par, writer, ckpt, early, clock, stream, *,
         use_ema, eval_ema, pi, pc) -> dict:
  tc = config.train
  is_main = pi == 0
  start_time = clock()

  # Variables, teacher, L2-SP anchor (deterministic in the config: recomputed on resume).
  domain_head = domain_head_of(config)
  base_model = build_model(config.model, num_classes, domain_head=domain_head)
  variables, report = init_variables(base_model, config.model, info.image_shape, tc.seed,
                                     extra_skip=(DOMAIN_HEAD,) if domain_head else ())
  logging.info("Model %s: %s", config.model.arch, report)
  teacher_model, extra = None, {}
  if config.loss.distill.teacher:
    teacher_model, extra["teacher"] = load_teacher(config.loss.distill, config.model.dtype)
  if config.freezing.l2sp_alpha or config.freezing.l2sp_beta_head:
    extra["anchor"] = variables["params"]
  extra = par.put_extra(extra)

  phases = optim.phases(config)
  if domain_head:
    phases = with_trained_domain_head(phases, variables["params"], head=config.freezing.head,
                                      strategy=config.freezing.strategy)
  setup_for = lambda i: setup_phase(config, phases, i, variables["params"], num_classes, par,
                                    teacher_model=teacher_model)
  eval_step = evaluate_lib.make_eval_step(base_model, par)

  def restore(step):
    """The checkpoint of ``step``, whose optimizer state is that of the phase of its last update."""
    tx = setup_for(optim.phase_at(phases, max(step - 1, 0))).tx
    abstract = jax.eval_shape(lambda: create_state(variables, tx, ema=use_ema))
    return ckpt.restore(step, abstract, par.state_sharding(abstract))

  latest = ckpt.latest_step()
  start = latest or 0
  setup = setup_for(optim.phase_at(phases, max(start - 1, 0)))
  meta: dict = {}
  if latest is None:
    state = par.put_state(create_state(variables, setup.tx, ema=use_ema))
  else:
    restored, meta = restore(latest)
    state = par.from_checkpoint(restored)
    early.load_state(meta.get("early_stopping", {}))
    logging.info("Resumed from %s at step %d", ckpt.directory, latest)

  progress = writers.Progress(tc.num_steps, source.batch_size, stream=stream,
                              enabled=is_main and tc.progress)
  stopped = bool(meta.get("stopped_early"))
  step = start
  if step < tc.num_steps and not stopped:
    it = source.train_iterator(seed=tc.seed, start_step=start, process_index=pi, process_count=pc)
    progress.start(start, clock())
    pending: list[tuple[int, Any]] = []
    for step in range(start + 1, tc.num_steps + 1):
      index = optim.phase_at(phases, step - 1)
      if index != setup.index:  # A phase boundary: new rules, model, optimizer, step.
        setup = setup_for(index)
        host = jax.tree.map(np.asarray, par.checkpointable(state))
        state = par.put_state(host.next_phase(setup.tx, restart=setup.phase.restart))
        logging.info("Step %d: phase %d, rules %s", step - 1, index, setup.phase.param_rules)
      state, m = setup.step(state, par.put_batch(next(it)), extra)
      pending.append((step, m))

      last = step == tc.num_steps
      preempted = ckpt.reached_preemption(step)
      is_eval = last or (tc.eval_every and step % tc.eval_every == 0)
      is_ckpt = is_eval or preempted or (tc.ckpt_every and step % tc.ckpt_every == 0)
      if is_ckpt or last or step % max(tc.log_every, 1) == 0:
        train = _summarize([(s, par.fetch(x)) for s, x in pending])  # raises on NaN / inf
        pending = []
        progress.update(step, clock())
        train["train/img_per_s"] = progress.img_per_s
        writer.write(step, train)
      eval_metrics = None
      if is_eval:
        eval_metrics = evaluate_lib.evaluate(eval_step, eval_variables(state, use_ema=eval_ema),
                                             source, par, process_index=pi, process_count=pc)
        early.update(step, eval_metrics)
        stopped = early.should_stop
        writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
        logging.info("Step %d eval: %s", step,
                     {k: round(v, 4) for k, v in eval_metrics.items() if k != "confusion_matrix"})
      if is_ckpt:
        meta = {"early_stopping": early.state(), "stopped_early": stopped,
                "eval": writers.jsonable(eval_metrics)}
        ckpt.save(step, par.checkpointable(state), meta=meta, metrics=eval_metrics)
      if preempted:
        ckpt.wait()
        logging.warning("Preempted at step %d: checkpoint saved; run the same command to resume.",
                        step)
        return {"step": int(step), "preempted": True}
      if stopped:
        logging.info("Early stopping at step %d: no %s improvement in %d evaluations (best %s at "
                     "step %s)", step, tc.best_metric, tc.patience, early.best_value,
                     early.best_step)
        break
  writer.flush()
  ckpt.wait()

  # Export: the best checkpoint (by best_metric) or the last one.
  export_step = ckpt.best_step() if tc.export == "best" else ckpt.latest_step()
  export_step = export_step if export_step is not None else step
  restored, export_meta = restore(export_step)
  exported = jax.tree.map(np.asarray, eval_variables(restored, use_ema=eval_ema))
  exported = without_domain_head(exported)  # training-only; the export is a plain classifier
  result = {
      "step": int(step), "export_step": int(export_step), "export": tc.export,
      "exported_ema": bool(eval_ema), "stopped_early": bool(stopped),
      "best_metric": tc.best_metric, "best_value": early.best_value, "best_step": early.best_step,
      "eval": export_meta.get("eval"), "num_classes": int(num_classes),
      "class_names": list(info.class_names), "train_img_per_s": progress.img_per_s,
      "wall_s": clock() - start_time,
  }
  if is_main:
    model_meta = {"arch": config.model.arch, "num_classes": int(num_classes),
                  "small_stem": bool(config.model.small_stem),
                  "base_planes": int(config.model.base_planes),
                  "class_names": list(info.class_names), "step": int(export_step)}
    export_variables(exported, os.path.join(workdir, "export"), model_meta)
    _write_json(os.path.join(workdir, "result.json"), result)
  parallel.sync("export")
  return result


__all__ = ["NonFiniteLossError", "PhaseSetup", "build_model", "create_state", "domain_head_of",
           "eval_variables", "export_variables", "init_variables", "load_teacher",
           "make_train_step", "setup_phase", "train_and_evaluate", "with_trained_domain_head",
           "without_domain_head"]
