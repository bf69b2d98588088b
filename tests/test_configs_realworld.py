"""The accelerator configs (CIFAR-10/100 and VTAB-1k from a converted ResNet-50, and their
benchmark grid): each file and arg loads as the CLI loads it, locked, with the recipe's fields; and
each trains 2 steps end to end on `tfds.testing.mock_data` with only its sizes shrunk (a narrow
ResNet-18 instead of the ResNet-50, 16-px crops, batch 8) from a fake converted checkpoint with a
1000-way head, so the wiring (data set, splits, selection, preprocessing ops, mixup, freezing,
schedule, weights loading with a new head) is what runs."""

import json
import os

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import pytest
import support as testing
import tensorflow_datasets as tfds

from jtransfer import configs_path, data, models, weights
from jtransfer.benchmark import harness
from jtransfer.train import trainer

TINY_PLANES, TINY_IMAGE = 8, 16
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = "weights/resnet50"

# (file, arg) -> the fields that arg must give.
CIFAR = {
    "": dict(steps=10_000, mixup=0.1, strategy="full_ft", lr=0.003, shots=None),
    "full": dict(steps=10_000, mixup=0.1, strategy="full_ft", lr=0.003, shots=None),
    "linear_probe": dict(steps=10_000, mixup=0.1, strategy="linear_probe", lr=0.01, shots=None),
    "5shot": dict(steps=500, mixup=0.0, strategy="full_ft", lr=0.003, shots=5),
    "runlocal": dict(steps=10, mixup=0.1, strategy="full_ft", lr=0.003 * 16 / 512, shots=None),
}
CASES = [(f"{name}.py", arg, dataset, want)
         for name, dataset in (("cifar10_r50", "cifar10"), ("cifar100_r50", "cifar100"))
         for arg, want in CIFAR.items()]
VTAB = {
    "": dict(dataset="cifar100", eval_split="test", flip=True),
    "dtd": dict(dataset="dtd", eval_split="test", flip=True),
    "svhn": dict(dataset="svhn_cropped", eval_split="test", flip=False),
    "eurosat": dict(dataset="eurosat/rgb", eval_split="train[80%:]", flip=True),
    "dtd,runlocal": dict(dataset="dtd", eval_split="val200", flip=True),
}


def load(path, arg="", *overrides):
  """As `python -m jtransfer.main --config=configs/PATH[:ARG] [--config.KEY=VALUE ...]` loads it."""
  spec = os.path.join(ROOT, "configs", path) + (f":{arg}" if arg else "")
  argv = ["prog", f"--config={spec}", *overrides]
  configs_path.add_from_argv(argv)
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def _check_common(config):
  assert config.is_locked
  with pytest.raises(AttributeError):
    config.train.num_step = 3  # a typo is an error, not a new key
  assert config.model.arch == "resnet50" and config.model.base_planes == 64
  assert config.model.init == WEIGHTS and not config.model.small_stem
  assert config.model.init_skip == (r"^fc/",)  # the ImageNet head is replaced
  o = config.optim
  assert (o.name, o.momentum, o.weight_decay, o.schedule) == ("momentum", 0.9, 0.0, "warmup_step")
  assert config.data.pp_train and config.data.pp_eval  # explicit, not the dataset default
  assert config.train.export == "last"  # the test split picks no checkpoint
  data.validate_config(config.data)


@pytest.mark.parametrize("path,arg,dataset,want", CASES)
def test_cifar_configs_load_locked_with_the_recipe(path, arg, dataset, want):
  config = load(path, arg)
  _check_common(config)
  assert config.data.dataset == dataset and config.data.shots == want["shots"]
  assert config.train.num_steps == want["steps"] and config.data.mixup_alpha == want["mixup"]
  assert config.freezing.strategy == want["strategy"]
  assert config.optim.lr == pytest.approx(want["lr"])
  if arg != "runlocal":
    assert (config.data.batch_size, config.model.dtype) == (512, "bfloat16")
  if want["steps"] == 10_000:
    assert (config.optim.warmup_steps, config.optim.decay_boundaries) == (500, (0.3, 0.6, 0.9))
  if want["steps"] == 500:
    assert (config.optim.warmup_steps, config.optim.decay_boundaries) == (100, (0.4, 0.6, 0.8))
  assert config.data.pp_train[2:4] == [{"op": "resize", "size": 160},
                                       {"op": "random_crop", "size": 128}]
  assert config.data.pp_eval[1] == {"op": "resize", "size": 128}


@pytest.mark.parametrize("arg,want", VTAB.items())
def test_vtab1k_config_loads_locked_with_the_recipe(arg, want):
  config = load("vtab1k_r50.py", arg)
  _check_common(config)
  assert config.data.dataset == want["dataset"] and config.data.eval_split == want["eval_split"]
  assert config.data.vtab1k and config.data.shots is None and config.data.mixup_alpha == 0.0
  assert ("flip_lr" in config.data.pp_train) == want["flip"]
  if "runlocal" not in arg:
    assert (config.train.num_steps, config.data.batch_size) == (2500, 512)
    assert config.optim.lr == pytest.approx(0.003)


def test_bad_args_are_errors():
  for path, arg in (("cifar10_r50.py", "lienar_probe"), ("vtab1k_r50.py", "dtd,svhn"),
                    ("vtab1k_r50.py", "imagenet"), ("benchmark/cifar10_r50.py", "fast")):
    with pytest.raises(flags.IllegalFlagValueError, match="config arg"):  # absl wraps ValueError
      load(path, arg)


def test_documented_overrides_apply_and_typos_fail():
  config = load("cifar10_r50.py", "5shot", "--config.data.data_dir=/data/tfds",
                "--config.model.init=/weights/r50", "--config.data.fewshot_seed=2")
  assert (config.data.data_dir, config.model.init, config.data.fewshot_seed) == (
      "/data/tfds", "/weights/r50", 2)
  bench = load("benchmark/cifar10_r50.py", "", "--config.base.data.data_dir=/data/tfds")
  assert bench.base.data.data_dir == "/data/tfds"
  with pytest.raises(AttributeError, match="num_steps"):
    load("vtab1k_r50.py", "dtd", "--config.train.num_step=3")


def test_benchmark_grid_validates():
  config = load("benchmark/cifar10_r50.py")
  harness.validate(config)
  assert config.order == ("linear_probe_cached", "ridge", "last_stage", "full_finetune", "lp_ft")
  assert config.shots == (1, 5, 10, 25, "all") and config.seeds == (0, 1, 2)
  assert len(harness.cells(config)) == 5 * 5 * 3
  assert not config.pretrain.enabled and config.base.model.init == WEIGHTS
  few = harness.cell_config(config, harness.Cell("cifar10", "lp_ft", 5, 2), pretrained=WEIGHTS)
  assert (few.train.num_steps, few.data.mixup_alpha, few.data.shots) == (500, 0.0, 5)
  assert few.freezing.strategy == "lp_ft" and few.data.fewshot_seed == 2
  full = harness.cell_config(config, harness.Cell("cifar10", "last_stage", "all", 0),
                             pretrained=WEIGHTS)
  assert (full.train.num_steps, full.data.mixup_alpha, full.data.shots) == (10_000, 0.1, None)
  harness.validate(load("benchmark/cifar10_r50.py", "quick"))


# --- 2-step runs on mock data ---


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
  """A 'converted checkpoint' of the shrunk model (resnet18, 8 base planes, 1000-way head): random
  values of the right shapes, as `python -m jtransfer.convert` would write them."""
  model = models.create("resnet18", num_classes=1000, base_planes=TINY_PLANES)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16, 16, 3), "float32"))
  rng = np.random.default_rng(0)
  fake = lambda path, s: (np.ones(s.shape, s.dtype) if jax.tree_util.keystr(path).endswith("['var']")
                          else 0.05 * rng.standard_normal(s.shape).astype(s.dtype))
  variables = jax.tree_util.tree_map_with_path(fake, dict(shapes))
  return weights.save(variables, str(tmp_path_factory.mktemp("w") / "resnet18_tiny"))


@pytest.fixture(scope="module", autouse=True)
def _compile_once(tmp_path_factory):
  with testing.compilation_cache(tmp_path_factory.getbasetemp() / "jax_cache"):
    yield


def _shrink(config, weights_dir):
  """Sizes only: model depth/width, image sizes, batches, shots, steps; the wiring stays the config's.

  Every config's crop becomes TINY_IMAGE px (its resize in proportion), so runs whose programs
  differ only in image size share compiled code through the persistent cache.
  """
  config.model.arch = "resnet18"
  config.model.base_planes = TINY_PLANES
  config.model.init = weights_dir
  scale = TINY_IMAGE / config.data.image_size
  config.data.image_size = TINY_IMAGE
  shrink_ops = lambda ops: [dict(op, size=max(1, round(op["size"] * scale)))
                            if isinstance(op, dict) and "size" in op else op for op in ops]
  config.data.pp_train = shrink_ops(config.data.pp_train)
  config.data.pp_eval = shrink_ops(config.data.pp_eval)
  config.data.batch_size = 8
  config.data.eval_batch_size = 200
  config.data.repeat_small = True  # 1-shot mock subsets can be smaller than a batch
  if config.data.shots:
    config.data.shots = 1  # mock labels are random: every class present has >= 1 example
  config.optim.warmup_steps = min(config.optim.warmup_steps, 1)
  config.train.num_steps = 2
  return config


def _run_two_steps(config, workdir, num_examples):
  with tfds.testing.mock_data(num_examples=num_examples):
    result = trainer.train_and_evaluate(config, str(workdir))
  with open(workdir / "result.json") as f:
    assert json.load(f)["step"] == 2
  return result


# One run per config file by default, each through a different selection (all data with mixup,
# few-shot, VTAB-1k); the other args' runs are marked slow (~10-20 s each, mostly compilation):
# `pytest -m "not slow"` leaves them out.
FAST_RUNS = {("cifar10_r50.py", ""), ("cifar100_r50.py", "5shot")}
RUN_CASES = [pytest.param(*case, marks=() if case[:2] in FAST_RUNS else pytest.mark.slow)
             for case in CASES if case[1] != "full"]  # '' is 'full'


@pytest.mark.parametrize("path,arg,dataset,want", RUN_CASES)
def test_cifar_config_trains_two_steps_on_mock_data(path, arg, dataset, want, tiny_weights,
                                                    tmp_path):
  config = _shrink(load(path, arg), tiny_weights)
  result = _run_two_steps(config, tmp_path, num_examples=40)
  assert result["num_classes"] == (10 if dataset == "cifar10" else 100)
  assert result["eval"]["num_examples"] == 40
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["data"]["dataset"] == dataset
  # The backbone came from model.init (2 small steps away from it), the head is new.
  start, end = weights.load(tiny_weights)["params"], weights.load(tmp_path / "export")["params"]
  kernel = lambda p: np.asarray(p["layer1"]["0"]["conv1"]["kernel"])
  assert np.abs(kernel(end) - kernel(start)).max() < 0.05
  if want["strategy"] == "linear_probe":
    np.testing.assert_array_equal(kernel(end), kernel(start))
  assert end["fc"]["kernel"].shape == (TINY_PLANES * 8, result["num_classes"])


@pytest.mark.parametrize("arg", ["", pytest.param("svhn", marks=pytest.mark.slow),
                                 pytest.param("dtd,runlocal", marks=pytest.mark.slow)])
def test_vtab1k_config_trains_two_steps_on_mock_data(arg, tiny_weights, tmp_path):
  config = _shrink(load("vtab1k_r50.py", arg), tiny_weights)
  result = _run_two_steps(config, tmp_path, num_examples=1000)  # train800 and val200 need 1,000
  assert result["eval"]["num_examples"] == (200 if "runlocal" in arg else 1000)
