"""train_and_evaluate end to end on tiny in-memory data: record, resume of a finished run, NaN stop,
early stopping with export of the best, EMA, gradient accumulation, distillation in bf16."""

import json
import os

import jax
import numpy as np
import pytest
import support as testing

from jtransfer import methods, optim, weights
from jtransfer.train import checkpointing, evaluate, parallel, trainer, writers


@pytest.fixture(scope="module", autouse=True)
def _compile_once(tmp_path_factory):
  with testing.compilation_cache(tmp_path_factory.getbasetemp() / "jax_cache"):
    yield


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, _compile_once):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = testing.tiny_config(num_steps=4, eval_every=2, ckpt_every=1, keep=1)
  source = testing.tiny_source()
  result = trainer.train_and_evaluate(config, workdir, source=source)
  return config, source, workdir, result


def test_run_leaves_a_full_record(finished_run):
  config, source, workdir, result = finished_run
  visible = sorted(n for n in os.listdir(workdir) if not n.startswith("."))  # .lock, .export-*
  assert visible == ["checkpoints", "config.json", "export", "identity.json", "metrics.jsonl",
                     "result.json"]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["base_planes"] == 8
  lines = writers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  train = [l for l in lines if "train/loss" in l]
  assert [l["step"] for l in train] == [1, 2, 3, 4]
  for key in ("train/grad_norm", "train/param_norm", "train/update_norm", "train/img_per_s",
              "train/top1"):
    assert key in train[-1]
  evals = [l for l in lines if "eval/top1" in l]
  assert [l["step"] for l in evals] == [2, 4]
  assert np.asarray(evals[0]["eval/confusion_matrix"]).sum() == source.info.num_eval
  # Kept: the last checkpoint and the best one; the export is the best's (ties: the earliest).
  best = 2 if evals[0]["eval/top1"] >= evals[1]["eval/top1"] else 4
  assert result["export_step"] == best
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))) == sorted({best, 4})
  with open(os.path.join(workdir, "result.json")) as f:
    assert json.load(f)["eval"]["top1"] == result["eval"]["top1"] == evals[best // 2 - 1]["eval/top1"]
  # The exported variables evaluate to the recorded metrics.
  variables = weights.load(os.path.join(workdir, "export"))
  model = trainer.build_model(config.model, source.info.num_classes)
  par = parallel.create("jit")
  m = evaluate.evaluate(evaluate.make_eval_step(model, par), par.put_state(variables), source, par)
  assert m["top1"] == pytest.approx(result["eval"]["top1"])
  assert m["loss"] == pytest.approx(result["eval"]["loss"], rel=1e-5)


def test_running_a_finished_run_again_only_re_exports(finished_run):
  config, source, workdir, result = finished_run
  before = len(writers.read_jsonl(os.path.join(workdir, "metrics.jsonl")))
  again = trainer.train_and_evaluate(config, workdir, source=source)
  assert len(writers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))) == before
  assert again["eval"] == result["eval"] and again["export_step"] == result["export_step"]


class _PoisonedSource(testing.inputs.ArraySource):
  """Serves NaN images from global step ``bad`` (0-based) on."""

  def __init__(self, bad, **kw):
    train, evaluation = testing.tiny_arrays()
    super().__init__(train, evaluation, batch_size=8, eval_batch_size=8, **kw)
    self.bad = bad

  def train_iterator(self, *, seed, start_step, process_index=0, process_count=1):
    for i, batch in enumerate(super().train_iterator(seed=seed, start_step=start_step,
                                                     process_index=process_index,
                                                     process_count=process_count)):
      if start_step + i >= self.bad:
        batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
      yield batch


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = testing.tiny_config(num_steps=6, eval_every=0, ckpt_every=2, log_every=3)
  # NaN images: the loss is NaN, or (XLA's ynn CPU fusion turns relu(NaN) into 0) the gradient is.
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"Non-finite (loss|grad_norm) \(nan\) at step 4"):
    trainer.train_and_evaluate(config, str(tmp_path), source=_PoisonedSource(bad=3))
  ck = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), best_metric=None)
  assert ck.all_steps() == [2]  # step 4 (after the NaN update) was never written
  ck.close()
  last = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))[-1]
  assert last["step"] == 4 and "Non-finite" in last["error"]


def test_early_stopping_exports_the_best(tmp_path):
  # A linear probe at lr 0 with frozen BatchNorms: nothing changes, so top1 never improves.
  config = testing.tiny_config(num_steps=20, eval_every=1, ckpt_every=0, patience=2)
  config.freezing = optim.get_freezing_config("linear_probe")
  config.optim.lr = 0.0
  result = trainer.train_and_evaluate(config, str(tmp_path), source=testing.tiny_source())
  assert result["stopped_early"] and result["step"] == 3
  assert result["export_step"] == result["best_step"] == 1
  # Re-running a stopped run does not train on.
  assert trainer.train_and_evaluate(config, str(tmp_path), source=testing.tiny_source())["step"] == 3


def _final_state(workdir, config, source):
  """The last checkpoint's state, as host arrays."""
  par = parallel.create("jit")
  variables, _ = trainer.init_variables(trainer.build_model(config.model, 4), config.model,
                                        source.info.image_shape, config.train.seed)
  phases = optim.phases(config)
  setup = trainer.Phases(config=config, task=None, phases=phases, params=variables["params"],
                         num_classes=4, par=par).at(0)
  abstract = jax.eval_shape(lambda: trainer.create_state(
      variables, setup.tx, ema=config.optim.ema_decay is not None))
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), best_metric=None)
  state, _ = ck.restore(ck.latest_step(), abstract)
  ck.close()
  return jax.tree.map(np.asarray, state)


def test_accumulation_matches_the_full_batch_and_ema_is_what_is_exported(tmp_path):
  # With frozen BatchNorms (a linear probe) microbatch gradients average to the full batch's.
  states = {}
  for accum in (1, 2):
    config = testing.tiny_config(num_steps=2, eval_every=0, ckpt_every=0)
    config.freezing = optim.get_freezing_config("linear_probe")
    config.optim.accum_steps = accum
    config.optim.ema_decay = 0.5
    config.train.export = "last"
    source = testing.tiny_source()
    result = trainer.train_and_evaluate(config, str(tmp_path / str(accum)), source=source)
    states[accum] = _final_state(str(tmp_path / str(accum)), config, source)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6),
               states[1].params, states[2].params)
  # The EMA of the parameters is evaluated and exported, not the parameters.
  assert result["exported_ema"]
  exported = weights.load(str(tmp_path / "2" / "export"))
  ema, params = states[2].ema_params["fc"]["kernel"], states[2].params["fc"]["kernel"]
  np.testing.assert_array_equal(exported["params"]["fc"]["kernel"], ema)
  assert not np.allclose(ema, params)


def test_a_config_naming_a_method_needs_its_task(tmp_path):
  config = testing.tiny_config()
  config.loss.distill.teacher = "/nowhere/export"
  with pytest.raises(ValueError, match=r"names the method 'distill'.*task_for"):
    trainer.train_and_evaluate(config, str(tmp_path), source=testing.tiny_source())
  assert not os.path.exists(tmp_path / "checkpoints")


def test_distillation_in_bf16_from_a_wider_teachers_export(finished_run, tmp_path):
  _, source, teacher_dir, _ = finished_run  # a resnet18 teacher with 8 base planes
  # (any arch: its model.json names it; tests/test_train_losses.py distills resnet34 into resnet18)
  config = testing.tiny_config(num_steps=2, eval_every=2, ckpt_every=2)
  config.model.base_planes = 4  # a narrower student
  config.model.dtype = "bfloat16"
  config.loss.distill.teacher = os.path.join(teacher_dir, "export")  # arch from its model.json
  config.loss.distill.alpha = 0.25
  result = trainer.train_and_evaluate(config, str(tmp_path), source=source,
                                      task=methods.task_for(config))
  lines = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert all(np.isfinite(l["train/distill_kl"]) for l in lines if "train/loss" in l)
  assert np.isfinite(result["eval"]["loss"])


def test_bn_mode_running_trains_scale_and_bias_but_keeps_the_statistics(tmp_path):
  config = testing.tiny_config(num_steps=2, eval_every=2, ckpt_every=2)
  config.freezing.bn_mode = "running"
  source = testing.tiny_source()
  trainer.train_and_evaluate(config, str(tmp_path / "run"), source=source)
  tuned = weights.load(str(tmp_path / "run" / "export"))
  model = trainer.build_model(config.model, source.info.num_classes)
  start, _ = trainer.init_variables(model, config.model, source.info.image_shape,
                                    config.train.seed)
  for a, b in zip(jax.tree.leaves(start["batch_stats"]), jax.tree.leaves(tuned["batch_stats"]),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(start["params"]["bn1"]["scale"], tuned["params"]["bn1"]["scale"])
