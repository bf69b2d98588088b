"""The one trainer: ``train_and_evaluate(config, workdir)``, reused by every transfer strategy.

    from jtransfer.train import trainer
    result = trainer.train_and_evaluate(config, "workdirs/run1")   # same call again = resume
    result["eval"]["top1"]

A run writes into ``workdir``: ``config.json``, ``metrics.jsonl`` and ``tensorboard/`` (process 0),
``checkpoints/`` (Orbax, every process), ``export/`` (the final variables via ``weights.save``, with
``model.json``) and ``result.json`` (the exported step's eval metrics). Running the same command
again resumes from the latest checkpoint; a finished run only re-exports.

What differs between supervised training, distillation and the adaptation methods is a ``Task``
(``train/task.py``: streams, loss, extra modules, export filter; the methods' tasks live in
``jtransfer/methods/`` and the caller passes one: ``methods.task_for(config)``); the model comes from its
family's spec (``models.from_config``); the loop is a list of periodic actions (``train.loop``).
The pieces, each usable alone: ``init_variables``, ``Phases`` (per-phase model, optimizer and
compiled step), ``evaluate``, ``checkpointing.Checkpointer`` and ``loop``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

from absl import logging
from clu import periodic_actions
import jax
import jax.numpy as jnp
import numpy as np

from jtransfer import models, optim, weights
from jtransfer import workdir as wd
from jtransfer.train import checkpointing, loop, parallel, programs, writers
from jtransfer.train import config as config_lib
from jtransfer.train import evaluate as evaluate_lib
from jtransfer.train.loop import NonFiniteLossError
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step as make_step_fn
from jtransfer.train.task import Task, method_of


def build_model(model_cfg: Any, num_classes: int | None, *, frozen_bn: tuple[str, ...] = (),
                bn_axis_name: str | None = None):
  """The model of ``config.model`` (``models.from_config``)."""
  return models.from_config(model_cfg, num_classes, frozen_bn=frozen_bn, bn_axis_name=bn_axis_name)


def init_variables(model: Any, model_cfg: Any, image_shape: tuple[int, ...], seed: int, *,
                   task: Any = None) -> tuple[dict, str]:
  """Fresh variables (numpy), ``model_cfg.init``'s weights merged in strictly, plus the task's
  own fresh modules.

  The init key is an 'rbg' key: XLA compiles the init of a ResNet several times faster than with
  threefry, and the values are as deterministic in ``seed`` on a given backend.
  """
  rng = jax.random.key(seed, impl="rbg")
  init = programs.shared(("init", model),
                         lambda: jax.jit(functools.partial(model.init, train=False)))
  variables = init(rng, jnp.zeros((1, *image_shape), jnp.float32))
  variables = jax.tree.map(np.asarray, dict(variables))
  report = "random initialisation (model.init = '')"
  if model_cfg.init:
    pretrained = weights.load(model_cfg.init, arch=model_cfg.arch)
    variables, merged = weights.merge(variables, pretrained, skip=tuple(model_cfg.init_skip))
    report = f"weights from {model_cfg.init}: {merged}"
  if task is not None:
    extra = task.init_extra(rng, model, variables, image_shape)
    variables["params"] = {**variables["params"], **extra}
  return variables, report


@dataclasses.dataclass(frozen=True)
class PlainPhase:
  """The parts of a one-phase supervised run, for loops other than the trainer's (FedAvg,
  Reptile): the start variables, the model with the freezing's BatchNorm mode, the trainable
  mask, the optimizer (its learning rate baked in) and the task's loss."""
  variables: dict
  model: Any
  mask: Any
  tx: Any
  loss_fn: Callable


def plain_phase(config: Any, num_classes: int, image_shape: tuple[int, ...], *,
                total_steps: int, where: str) -> PlainPhase:
  """``config``'s model, freezing, optimizer and loss as one ``PlainPhase``; ``where`` names
  the caller in the errors (only the supervised task, one freezing phase, no L2-SP)."""
  if method_of(config) is not None:
    raise ValueError(f"{where} runs the supervised task only, not {method_of(config)!r}")
  phases = optim.phases(config)
  if len(phases) != 1:
    raise ValueError(f"{where} takes one freezing phase; {config.freezing.strategy!r} has "
                     f"{len(phases)}")
  if config.freezing.l2sp_alpha or config.freezing.l2sp_beta_head:
    raise ValueError(f"{where} does not take the L2-SP penalty")
  variables, _ = init_variables(build_model(config.model, num_classes), config.model,
                                image_shape, int(config.train.seed))
  rules = phases[0].param_rules
  labels = optim.label_params(variables["params"], rules)
  model = build_model(config.model, num_classes,
                      frozen_bn=optim.frozen_bn_patterns(labels, config.freezing.bn_mode))
  mask = optim.trainable_mask(labels)
  tx = optim.build_optimizer(config.optim, rules, variables["params"], total_steps=total_steps)
  loss_fn = Task(config).loss_fn(model, step=0, extra={}, l2sp=None, trainable=mask)
  return PlainPhase(variables, model, mask, tx, loss_fn)


def make_train_step(config: Any, model: Any, tx: Any, mask: Any, par: Any, *,
                    task: Any = None) -> Callable:
  """The train step of one phase, compiled by ``par`` (jit over the mesh, or pmap).

  ``tx`` must be built with ``optim.build_optimizer(..., lr_input=True)``: the step multiplies
  its updates by ``extra['lr']`` (``config.optim.lr``).
  ``extra`` (replicated, passed at every call rather than baked into the program) holds the run's
  rng key data and peak learning rate (``extra_inputs``), the task's inputs (a teacher's variables) and the L2-SP anchor when those are used; so runs
  that differ only in seed, learning rate, data or weights share one program
  (``programs``). The task's loss is built inside the step, so it can follow ``state.step`` (a
  schedule over training progress).
  """
  task = task if task is not None else Task(config)
  fz = config.freezing
  use_l2sp = bool(fz.l2sp_alpha or fz.l2sp_beta_head)
  head = optim.head_pattern(config) if use_l2sp else None

  def step(state, batch, extra):
    l2sp = None
    if use_l2sp:
      l2sp = functools.partial(optim.l2sp_penalty, anchor_params=extra["anchor"],
                               alpha=fz.l2sp_alpha, beta_head=fz.l2sp_beta_head, head_pattern=head)
    loss_fn = task.loss_fn(model, step=state.step, extra=extra, l2sp=l2sp, trainable=mask)
    step_fn = make_step_fn(loss_fn, tx, mask, axis_name=par.axis_name,
                           accum_steps=config.optim.accum_steps, ema_decay=config.optim.ema_decay)
    return step_fn(state, batch, jax.random.wrap_key_data(extra["rng"]), lr=extra["lr"])

  return par.compile(step)


def extra_inputs(config: Any, task: Any, variables: dict) -> dict:
  """What every train step receives besides state and batch (``make_train_step``), host side."""
  extra = {"rng": np.asarray(jax.random.key_data(jax.random.key(int(config.train.seed)))),
           "lr": np.float32(config.optim.lr)}
  extra.update(task.extra_inputs())
  if config.freezing.l2sp_alpha or config.freezing.l2sp_beta_head:
    extra["anchor"] = variables["params"]
  return extra


def program_key(config: Any, task: Any, phase: Any, params: Any, num_classes: int,
                par: Any) -> tuple:
  """What defines a phase's compiled train step (``programs.shared``'s key).

  ``optim.lr`` is an input of the step, except where a rule sets its own ``lr``: that group's
  multiplier is ``own lr / optim.lr``, a constant of the program.
  """
  own_lr = any("lr" in dict(r.schedule) for r in optim.parse_rules(phase.param_rules))
  return ("train", programs.config_key(config), task.program_key(), repr(phase), int(num_classes),
          programs.shapes_key(params), programs.device_key(par),
          float(config.optim.lr) if own_lr else None)


@dataclasses.dataclass
class Phases:
  """The freezing phases of a run, and for the phase in force: model, optimizer, compiled step."""
  config: Any
  task: Any
  phases: list
  params: Any
  num_classes: int
  par: Any
  index: int = -1
  model: Any = None
  tx: Any = None
  step: Callable | None = None

  def at(self, index: int) -> "Phases":
    """Switches to phase ``index`` (labels, frozen BatchNorms, optimizer, compiled step)."""
    if index != self.index:
      rules = self.phases[index].param_rules
      labels = optim.label_params(self.params, rules)
      frozen_bn = optim.frozen_bn_patterns(labels, self.config.freezing.bn_mode)
      self.model = build_model(self.config.model, self.num_classes, frozen_bn=frozen_bn,
                               bn_axis_name=self.par.axis_name)
      self.tx = optim.build_optimizer(self.config.optim, rules, self.params,
                                      total_steps=self.config.train.num_steps,
                                      schedule_start=self.phases[index].schedule_start,
                                      lr_input=True)
      task = self.task if self.task is not None else Task(self.config)
      key = program_key(self.config, task, self.phases[index], self.params, self.num_classes,
                        self.par)
      model, tx, mask = self.model, self.tx, optim.trainable_mask(labels)
      self.step = programs.shared(key, lambda: make_train_step(self.config, model, tx, mask,
                                                               self.par, task=task))
      self.index = index
    return self

  def for_step(self, step: int) -> "Phases":
    """The phase that makes update number ``step`` (1-based), i.e. in force at ``step - 1``."""
    return self.at(optim.phase_at(self.phases, max(step - 1, 0)))


def create_state(variables: dict, tx: Any, *, ema: bool, step: int = 0) -> TrainState:
  return TrainState.create(params=variables["params"], batch_stats=variables.get("batch_stats", {}),
                           tx=tx, ema=ema, step=step)


def eval_variables(state: Any, *, use_ema: bool) -> dict:
  """The variables evaluated and exported: the EMA of the parameters when kept and asked for."""
  params = state.ema_params if use_ema and state.ema_params is not None else state.params
  return {"params": params, "batch_stats": state.batch_stats}


def _check_batches(source: Any, par: Any) -> None:
  for name, b in (("batch_size", source.batch_size), ("eval_batch_size", source.eval_batch_size)):
    if b % par.num_devices:
      raise ValueError(f"data.{name}={b} (global) must be divisible by the {par.num_devices} devices")


def _check_size(config: Any, source: Any) -> None:
  """A train split smaller than one batch is an error, or with ``data.repeat_small`` a logged
  repeat (each batch then holds every example ~batch/n times)."""
  n, b = source.info.num_train, source.batch_size
  if n >= b:
    return
  where = f"{config.data.dataset}/{config.data.train_split}"
  if not config.data.get("repeat_small", False):
    raise ValueError(f"{where}: {n} train examples, fewer than one batch of {b}: set "
                     "data.repeat_small=True to repeat examples within batches, or lower "
                     "data.batch_size")
  logging.warning("%s: %d train examples < batch %d: each batch repeats examples ~%.1f times",
                  where, n, b, b / n)


@dataclasses.dataclass
class Run:
  """Everything a run holds between setup and export."""
  config: Any
  workdir: str
  task: Any
  source: Any
  par: Any
  phases: Phases
  variables: dict
  extra: dict
  writer: Any
  ckpt: Any
  early: Any
  num_classes: int
  is_main: bool
  # The step, state and metadata of the last checkpoint this process saved; export uses them
  # instead of reading that checkpoint back when it is the final one (no step donated it since).
  last_saved: tuple | None = None

  @property
  def use_ema(self) -> bool:
    return self.config.optim.ema_decay is not None

  @property
  def eval_ema(self) -> bool:
    return self.use_ema and self.config.train.eval_ema

  def restore(self, step: int) -> tuple[Any, dict]:
    """The checkpoint of ``step``, under the optimizer of the phase of its last update."""
    tx = self.phases.for_step(step).tx
    abstract = jax.eval_shape(lambda: create_state(self.variables, tx, ema=self.use_ema))
    return self.ckpt.restore(step, abstract, self.par.state_sharding(abstract))


def setup(config: Any, workdir: str, *, task: Any, source: Any, writer: Any, ckpt: Any) -> Run:
  """Data, model variables, task inputs and phases of a run (deterministic in the config)."""
  tc = config.train
  source = source if source is not None else task.source()
  if jax.process_index() == 0 and hasattr(source, "save_class_names"):
    source.save_class_names(workdir)
  num_classes = config.model.num_classes or source.info.num_classes
  if num_classes < source.info.num_classes:
    raise ValueError(f"model.num_classes={num_classes} is smaller than the "
                     f"{source.info.num_classes} classes of the data ({config.data.dataset}): "
                     f"labels up to {source.info.num_classes - 1} would fall outside the head")
  _check_size(config, source)
  par = parallel.create(tc.parallel)
  _check_batches(source, par)
  model = build_model(config.model, num_classes)
  variables, report = init_variables(model, config.model, source.info.image_shape, tc.seed,
                                     task=task)
  logging.info("Model %s: %s", config.model.arch, report)
  extra = extra_inputs(config, task, variables)
  phase_list = task.phases(optim.phases(config), variables["params"])
  phases = Phases(config, task, phase_list, variables["params"], num_classes, par)
  early = checkpointing.EarlyStopping(tc.best_metric, mode=tc.best_mode, patience=tc.patience)
  return Run(config, workdir, task, source, par, phases, variables, par.put_extra(extra), writer,
             ckpt, early, num_classes, jax.process_index() == 0)


def train(run: Run, *, clock: Callable[[], float]) -> dict:
  """Resumes or starts, runs the loop; returns facts for ``result.json``."""
  tc, par = run.config.train, run.par
  latest = run.ckpt.latest_step()
  start, meta = latest or 0, {}
  if latest is None:
    state = par.put_state(create_state(run.variables, run.phases.for_step(1).tx, ema=run.use_ema))
  else:
    restored, meta = run.restore(latest)
    state = par.from_checkpoint(restored)
    run.early.load_state(meta.get("early_stopping", {}))
    logging.info("Resumed from %s at step %d", run.ckpt.directory, latest)
  ls = loop.LoopState(state=state, last_step=start)
  if start >= tc.num_steps or meta.get("stopped_early"):
    return {"step": start, "stopped_early": bool(meta.get("stopped_early")), "img_per_s": None}
  actions = _actions(run, ls)
  pi, pc = jax.process_index(), jax.process_count()
  batches = run.source.train_iterator(seed=tc.seed, start_step=start, process_index=pi,
                                      process_count=pc)
  ls = loop.run(ls, lambda s, b: run.phases.step(s, par.put_batch(b), run.extra), batches,
                start=start, num_steps=tc.num_steps, actions=actions, clock=clock,
                on_step=lambda step: _switch_phase(run, ls, step))
  if ls.stop:
    logging.info("Stopped at step %d: %s", ls.last_step, ls.stop)
  return {"step": ls.last_step, "stopped_early": ls.stop not in ("", "preempted"),
          "preempted": ls.stop == "preempted", "img_per_s": actions[0].img_per_s}


def _switch_phase(run: Run, ls: loop.LoopState, step: int) -> None:
  """At a phase boundary: new rules, model, optimizer and step; the optimizer state carried."""
  index = run.phases.index
  run.phases.for_step(step)
  if run.phases.index != index:
    host = jax.tree.map(np.asarray, run.par.checkpointable(ls.state))
    ls.state = run.par.put_state(host.next_phase(run.phases.tx,
                                                 restart=run.phases.phases[run.phases.index].restart))
    logging.info("Step %d: phase %d, rules %s", step - 1, run.phases.index,
                 run.phases.phases[run.phases.index].param_rules)


def _actions(run: Run, ls: loop.LoopState) -> list:
  """The loop's periodic actions, in the order they run after each step."""
  tc, par = run.config.train, run.par
  n = tc.num_steps
  around = loop.steps_every(tc.eval_every, n) | loop.steps_every(tc.ckpt_every, n)

  def save(step, state, eval_metrics, *, stopped):
    meta = {"early_stopping": run.early.state(), "stopped_early": stopped,
            "eval": writers.jsonable(eval_metrics)}
    saved = par.checkpointable(state)
    run.ckpt.save(step, saved, meta=meta, metrics=eval_metrics)
    run.last_saved = (step, saved, json.loads(json.dumps(meta)))

  actions = [
      loop.LogTrain(ls, every_steps=tc.log_every, num_steps=n, on_steps=around, fetch=par.fetch,
                    writer=run.writer, batch_size=run.source.batch_size),
      loop.Evaluate(ls, every_steps=tc.eval_every, num_steps=n, evaluators=_evaluators(run),
                    writer=run.writer, early_stopping=run.early),
      loop.Checkpoint(ls, every_steps=tc.ckpt_every, num_steps=n, on_steps=around, save=save),
      loop.Preemption(ls, reached=run.ckpt.reached_preemption, save=save),
  ]
  if tc.progress and run.is_main:
    actions.append(periodic_actions.ReportProgress(num_train_steps=n, every_secs=30.0))
  return actions


def eval_step(model: Any, par: Any) -> Callable:
  """The compiled eval step of ``model`` under ``par``, shared by every run of the process."""
  return programs.shared(("eval", model, programs.device_key(par)),
                         lambda: evaluate_lib.make_eval_step(model, par))


def _evaluators(run: Run) -> dict:
  """``{name: fn(state) -> metrics}``: the run's eval split (top-1 and the rest)."""
  step = eval_step(build_model(run.config.model, run.num_classes), run.par)
  pi, pc = jax.process_index(), jax.process_count()

  def classification(state):
    return evaluate_lib.evaluate(step, eval_variables(state, use_ema=run.eval_ema), run.source,
                                 run.par, process_index=pi, process_count=pc)

  return {"classification": classification}


def export(run: Run, facts: dict, *, wall_s: float,
           on_export: Callable[[dict, dict], None] | None = None) -> dict:
  """Writes ``export/`` (the best or last checkpoint's variables) and ``result.json``; hands the
  exported variables and the result to ``on_export`` (in memory: a caller that evaluates them
  next need not read them back)."""
  tc = run.config.train
  run.ckpt.wait()
  export_step = run.ckpt.best_step() if tc.export == "best" else run.ckpt.latest_step()
  export_step = export_step if export_step is not None else facts["step"]
  if run.last_saved is not None and run.last_saved[0] == export_step == facts["step"]:
    _, restored, export_meta = run.last_saved  # what was just written, without reading it back
  else:
    restored, export_meta = run.restore(export_step)
  exported = run.task.export(jax.tree.map(np.asarray, eval_variables(restored, use_ema=run.eval_ema)))
  info = run.source.info
  result = {
      "step": int(facts["step"]), "export_step": int(export_step), "export": tc.export,
      "exported_ema": bool(run.eval_ema), "stopped_early": bool(facts["stopped_early"]),
      "best_metric": tc.best_metric, "best_value": run.early.best_value,
      "best_step": run.early.best_step, "eval": export_meta.get("eval"),
      "num_classes": int(run.num_classes), "class_names": list(info.class_names),
      "train_img_per_s": facts["img_per_s"], "wall_s": wall_s,
  }
  if run.is_main:
    meta = models.meta(run.config.model, num_classes=run.num_classes,
                       class_names=info.class_names, step=int(export_step))
    rd = wd.RunDir(run.workdir)
    weights.save(exported, rd.export, metadata=meta, overwrite=True)
    rd.write_result(writers.jsonable(result))
  parallel.sync("export")
  if on_export is not None:
    on_export(exported, result)
  return result


def train_and_evaluate(config: Any, workdir: str, *, source: Any = None, task: Any = None,
                       clock: Callable[[], float] = time.monotonic,
                       on_export: Callable[[dict, dict], None] | None = None) -> dict:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and returns the result.

  Args:
    config: the experiment config (``train.config.get_base_config()`` and its experiment file).
    workdir: where the run's record, checkpoints and export go.
    source: the data; default: the task's (``task.source()``). Tests pass an
      ``inputs.ArraySource``.
    task: what the run optimises: ``methods.task_for(config)`` when the config names a method
      (distillation, adaptation); default the supervised ``Task(config)``, and an error
      when the config names a method but no task is passed.
    clock: seconds, for img/s and progress (tests pass a fake one).
    on_export: called with the exported variables (host arrays) and the result, after
      ``export/`` and ``result.json`` are written (the benchmark evaluates them in memory).

  Returns the content of ``result.json``: the exported step, its eval metrics, and run facts (or,
  when the cluster signals preemption, ``{'step', 'preempted': True}`` after a checkpoint).
  Raises ``NonFiniteLossError`` naming the step where the loss became NaN/inf.
  """
  parallel.initialize_distributed(config.train.distributed)
  config_lib.validate(config)
  is_main = jax.process_index() == 0
  workdir = os.path.abspath(workdir)
  start_time = clock()
  with contextlib.ExitStack() as stack:
    if is_main:
      os.makedirs(workdir, exist_ok=True)
      stack.enter_context(wd.WorkdirLock(workdir))  # a second run on this workdir stops here
    wd.check_identity(workdir, config)  # nothing in the workdir changes before this passes
    parallel.sync("workdir")
    task = task if task is not None else _supervised(config)
    return _train_in(config, workdir, task=task, source=source, clock=clock,
                     start_time=start_time, on_export=on_export)


def _supervised(config: Any) -> Task:
  name = method_of(config)
  if name is not None:
    raise ValueError(f"the config names the method {name!r} (adapt.method / loss.distill.teacher); "
                     "pass its task: train_and_evaluate(config, workdir, "
                     "task=jtransfer.methods.task_for(config))")
  return Task(config)


def _train_in(config: Any, workdir: str, *, task: Any, source: Any, clock: Callable[[], float],
              start_time: float, on_export: Callable[[dict, dict], None] | None) -> dict:
  """``train_and_evaluate`` once the workdir is locked and its identity checked."""
  tc = config.train
  is_main = jax.process_index() == 0
  rd = wd.RunDir(workdir)
  ckpt = checkpointing.Checkpointer(rd.checkpoints, keep=tc.keep,
                                    best_metric=tc.best_metric, best_mode=tc.best_mode)
  if tc.resume_from_step is not None:
    logging.warning("Restarting from step %d: removed checkpoints %s", tc.resume_from_step,
                    ckpt.delete_after(tc.resume_from_step))
  if is_main:
    wd.write_identity(workdir, config)
    wd.cleanup_leftovers(workdir)
    # The lines after the restored step were written by a killed run and are about to be again.
    wd.truncate_metrics(rd.metrics, ckpt.latest_step() or 0)
    rd.write_config(config)
  writer = writers.MetricWriter(workdir, enabled=is_main, tensorboard=tc.tensorboard)
  try:
    run = setup(config, workdir, task=task, source=source, writer=writer, ckpt=ckpt)
    facts = train(run, clock=clock)
    if facts.get("preempted"):
      ckpt.wait()
      logging.warning("Preempted at step %d: checkpoint saved; run the same command to resume.",
                      facts["step"])
      return {"step": int(facts["step"]), "preempted": True}
    writer.flush()
    return export(run, facts, wall_s=clock() - start_time, on_export=on_export)
  except NonFiniteLossError as e:
    safe = [s for s in ckpt.all_steps() if s < e.step]
    e.args = (f"{e} Kept checkpoints before it: {safe}; restart from one with "
              "--config.train.resume_from_step=S, or retry with other settings (a lower "
              "learning rate) in a new --workdir: this one's config is fixed (identity.json).",)
    writer.write(e.step, {"error": str(e)})
    raise
  finally:
    ckpt.close()
    writer.close()


__all__ = ["NonFiniteLossError", "Phases", "PlainPhase", "Run", "build_model", "create_state", "eval_step",
           "eval_variables", "export", "extra_inputs", "init_variables", "make_train_step", "plain_phase",
           "program_key", "setup",
           "train", "train_and_evaluate"]
