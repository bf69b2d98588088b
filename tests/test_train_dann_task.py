"""config.adapt through the one trainer: DANN with a label-free target stream, the real offline
MNIST-5k → UCI digits config for 2 steps, and the config's errors."""

import importlib
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest
import support as testing

from jtransfer import configs_path, methods, models, optim, weights
from jtransfer.methods.adapt import dann, domain_head
from jtransfer.methods.adapt import source as streams
from jtransfer.train import config as config_lib
from jtransfer.train import evaluate, inputs, parallel, trainer, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def _compile_once(tmp_path_factory):
  with testing.compilation_cache(tmp_path_factory.getbasetemp() / "jax_cache"):
    yield


def _load_config(name, arg=None):
  path = os.path.join(ROOT, "configs", f"{name}.py")
  configs_path.add_package_root(path)  # the repository's configs/ importable, as the CLI makes it
  return importlib.import_module(f"configs.{name}").get_config(arg)


class _LabelFreeTarget:
  """A target image stream that has no labels to leak: only 'image' exists, and it counts reads."""

  def __init__(self, images, batch_size):
    self.images, self.batch_size, self.batches = images, batch_size, 0

  def __call__(self, *, seed, start_step, process_index, process_count):
    del process_index, process_count
    rng = np.random.default_rng([seed, start_step])
    while True:
      self.batches += 1
      yield {"image": self.images[rng.integers(0, len(self.images), self.batch_size)]}


def _dann_config(**adapt):
  config = testing.tiny_config(num_steps=4, eval_every=4, ckpt_every=4)
  config.adapt.method = "dann"
  config.adapt.target_dataset = "in-memory"  # unused: the test passes the source itself
  config.adapt.domain_head = (8,)
  for k, v in adapt.items():
    config.adapt[k] = v
  return config


def _dann_source(config, target):
  (x, y), (xe, ye) = testing.tiny_arrays(num_train=32, num_eval=12, seed=0)
  labeled = inputs.ArraySource((x, y), (xe, ye), batch_size=8, eval_batch_size=8, num_classes=4)
  # The target domain: the same classes, shifted and rescaled images; 10 eval images (≠ 12).
  (tx, _), (txe, tye) = testing.tiny_arrays(num_train=8, num_eval=10, seed=1)
  target_eval = inputs.ArraySource((1.5 * tx + 1, np.zeros(8, np.int32)), (1.5 * txe + 1, tye),
                                   batch_size=8, eval_batch_size=8, num_classes=4,
                                   class_names=("a", "b", "c", "d"))
  return streams.DomainAdaptationSource(labeled, target, target_eval)


def test_dann_trains_the_domain_head_from_label_free_target_and_evaluates_on_it(tmp_path):
  config = _dann_config()
  (ti, _), _ = testing.tiny_arrays(num_train=24, seed=2)
  target = _LabelFreeTarget(1.5 * ti + 1, batch_size=8)
  source = _dann_source(config, target)
  workdir = str(tmp_path)
  result = trainer.train_and_evaluate(config, workdir, source=source,
                                      task=methods.task_for(config))

  assert target.batches >= config.train.num_steps  # the target stream fed every step
  lines = writers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  train = [l for l in lines if "train/domain_bce" in l]
  assert len(train) == 4 and all(np.isfinite(l["train/domain_bce"]) for l in train)
  lams = [l["train/grl_lambda"] for l in train]  # the paper's schedule at p = 0, 1/4, 2/4, 3/4
  np.testing.assert_allclose(lams, [2 / (1 + np.exp(-10 * s / 4)) - 1 for s in range(4)],
                             rtol=1e-5, atol=1e-7)
  # Evaluated on the target's eval split, with the target's class names.
  assert result["eval"]["num_examples"] == 10
  assert np.asarray(result["eval"]["confusion_matrix"]).sum() == 10
  assert result["class_names"] == ["a", "b", "c", "d"]

  # The domain head was trained: its parameters moved away from their (seeded) initialisation.
  model = trainer.build_model(config.model, 4)
  init, _ = trainer.init_variables(model, config.model, (8, 8, 3), config.train.seed,
                                   task=dann.DANN(config))
  state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "4", "state"))
  for leaf in ("hidden0", "out"):
    before = init["params"]["domain_head"][leaf]["kernel"]
    after = np.asarray(state["params"]["domain_head"][leaf]["kernel"])
    assert before.shape == after.shape and not np.allclose(before, after)

  # The export is a plain classifier: no domain head; it evaluates to the recorded metrics.
  exported = weights.load(os.path.join(workdir, "export"))
  assert "domain_head" not in exported["params"] and "fc" in exported["params"]
  plain = trainer.build_model(config.model, 4)
  par = parallel.create("jit")
  m = evaluate.evaluate(evaluate.make_eval_step(plain, par), par.put_state(exported), source, par)
  assert m["top1"] == pytest.approx(result["eval"]["top1"])


def test_real_config_parses_and_runs_two_steps(tmp_path):
  """configs/dann_mnist_to_digits.py with the offline MNIST-5k and UCI digits, shrunk."""
  for arg in ("dann", "source_only", "source_only,runlocal"):
    _load_config("dann_mnist_to_digits", arg)
  with pytest.raises(ValueError, match="conflicting"):
    _load_config("dann_mnist_to_digits", "dann,source_only")
  config = _load_config("dann_mnist_to_digits", "runlocal")
  config.model.base_planes = 4
  config.data.image_size = 8
  config.data.batch_size = 8
  config.data.eval_batch_size = 150
  config.adapt.domain_head = (8,)
  config.train.num_steps = 2
  config.train.ckpt_every = 2
  config.train.log_every = 1
  config.train.progress = False
  config.train.tensorboard = False
  result = trainer.train_and_evaluate(config, str(tmp_path), task=methods.task_for(config))
  assert result["step"] == 2
  assert result["eval"]["num_examples"] == 450  # UCI digits' test split, not MNIST's
  first = writers.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))[0]
  assert {"train/domain_acc", "train/domain_bce", "train/grl_lambda"} <= set(first)


def test_target_data_config_keeps_the_pipeline_and_drops_label_uses():
  config = _load_config("dann_mnist_to_digits")
  config.data.shots = 5
  config.data.mixup_alpha = 0.2
  config.adapt.target_split = "train[:50%]"
  t = streams.target_data_config(config)
  assert (t.dataset, t.train_split, t.eval_split) == ("uci_digits", "train[:50%]", "test")
  assert (t.image_size, t.batch_size) == (config.data.image_size, config.data.batch_size)
  assert t.shots is None and t.mixup_alpha == 0.0 and config.data.dataset == "mnist5k"
  stream = streams.images_only(inputs.ArraySource(*testing.tiny_arrays(num_train=8, num_eval=4),
                                               batch_size=4, eval_batch_size=4))
  batch = next(stream(seed=0, start_step=0, process_index=0, process_count=1))
  assert set(batch) == {"image"}


@pytest.mark.parametrize("field, value, match", [
    ("method", "dan", "adapt.method"),
    ("target_dataset", "", "adapt.target_dataset"),
    ("lambda_schedule", "linear", "adapt.lambda_schedule"),
    ("domain_weight", -1.0, "adapt.domain_weight"),
    ("gamma", 0.0, "adapt.gamma"),
    ("domain_head", (), "adapt.domain_head"),
])
def test_bad_adapt_field_is_a_clear_error(field, value, match):
  config = _dann_config()
  config.adapt.target_dataset = "uci_digits"
  config.adapt[field] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate(config)
  with pytest.raises(AttributeError, match="lamda"):
    config.adapt.lamda = 1.0  # the config is locked: a typo is an error, not a new field


def _head_params():
  z = np.zeros((2, 2), np.float32)
  return {"conv1": {"kernel": z}, "layer4": {"kernel": z}, "fc": {"kernel": z},
          "domain_head": {"hidden0": {"kernel": z}, "out": {"kernel": z}}}


def test_domain_head_is_trained_under_any_preset_and_a_probe_is_refused():
  params = _head_params()
  last = optim.phases(optim.get_freezing_config("last_stages", k=1), spec=models.get_spec("resnet18"))
  (phase,) = domain_head.with_trained_domain_head(last, params, head=r"^fc/")
  labels = optim.label_params(params, phase.param_rules)
  assert labels["domain_head"]["out"]["kernel"] != optim.FROZEN
  assert labels["conv1"]["kernel"] == optim.FROZEN
  full = optim.phases(optim.get_freezing_config("full_ft"), spec=models.get_spec("resnet18"))
  assert domain_head.with_trained_domain_head(full, params, head=r"^fc/") == full  # '.*' already trains it
  probe = optim.phases(optim.get_freezing_config("linear_probe"), spec=models.get_spec("resnet18"))
  with pytest.raises(ValueError, match="no phase trains a backbone parameter.*source_only"):
    domain_head.with_trained_domain_head(probe, params, head=r"^fc/", strategy="linear_probe")
  gradual = optim.phases(optim.get_freezing_config("gradual_unfreezing", unfreeze_steps=(5,)),
                         spec=models.get_spec("resnet18"))
  assert len(domain_head.with_trained_domain_head(gradual, params, head=r"^fc/")) == 2  # a later phase trains layer4
