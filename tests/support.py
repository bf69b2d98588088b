"""Test helpers: a tiny config, in-memory data, subprocess environments (``import support``).

    config = testing.tiny_config(num_steps=4)
    source = testing.tiny_source()
    result = trainer.train_and_evaluate(config, tmp_path, source=source)

The model is a small-stem ResNet-18 with 8 base planes on 8×8 images: one train step compiles in a
few seconds on a CPU core and runs in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from jtransfer.train import config as config_lib
from jtransfer.train import inputs


def tiny_config(**train_overrides):
  """The base config, shrunk: resnet18 (8 base planes, small stem), SGD, no TensorBoard/progress."""
  c = config_lib.get_base_config()
  c.model.small_stem = True
  c.model.base_planes = 8
  c.optim.name = "momentum"
  c.optim.lr = 0.05
  c.optim.schedule = "constant"
  c.train.num_steps = 4
  c.train.eval_every = 2
  c.train.ckpt_every = 2
  c.train.log_every = 1
  c.train.keep = 2
  c.train.tensorboard = False
  c.train.progress = False
  for k, v in train_overrides.items():
    c.train[k] = v
  return c


def tiny_experiment(dataset: str = "uci_digits", steps: int = 2, init: str = ""):
  """A benchmark cell's base on real offline data, shrunk: small-stem ResNet-18 with 8 base
  planes at 8 px, batch 16, ``steps`` steps, one evaluation at the end, the last step exported."""
  c = config_lib.get_base_config()
  c.model.small_stem = True
  c.model.base_planes = 8
  c.model.init = init
  c.data.dataset = dataset
  c.data.image_size = 8
  c.data.batch_size = 16
  c.data.eval_batch_size = 500
  c.optim.warmup_steps = 0
  c.train.num_steps = steps
  c.train.eval_every = 0
  c.train.ckpt_every = 0
  c.train.export = "last"
  c.train.tensorboard = False
  c.train.progress = False
  return c


def tiny_arrays(num_train: int = 48, num_eval: int = 20, num_classes: int = 4, size: int = 8,
                seed: int = 0):
  """Learnable toy images: each class brightens its own quadrant-ish pattern, plus noise."""
  rng = np.random.default_rng(seed)
  patterns = rng.normal(size=(num_classes, size, size, 3)).astype(np.float32)
  def make(n):
    y = rng.integers(0, num_classes, n)
    x = patterns[y] + 0.5 * rng.normal(size=(n, size, size, 3)).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int32)
  return make(num_train), make(num_eval)


def tiny_source(batch_size: int = 8, eval_batch_size: int = 8, **kwargs) -> inputs.ArraySource:
  train, evaluation = tiny_arrays(**kwargs)
  return inputs.ArraySource(train, evaluation, batch_size=batch_size,
                            eval_batch_size=eval_batch_size)


def init_key(seed: int = 0):
  """A key for ``model.init`` in tests, as ``trainer.init_variables`` makes one: 'rbg', whose
  init XLA compiles several times faster than threefry's (ResNet-18 at 32 px: 1.8 against
  4.0 s; EfficientNet-Lite0: 4.9 against 7.6 s). The values are as arbitrary either way."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.random.key(seed, impl="rbg")


@contextlib.contextmanager
def compilation_cache(path: str):
  """A persistent compilation cache at ``path`` while inside: identical programs compile once.

  Tests run many tiny trainings of the same model; compiling dominates their time. The previous
  cache settings come back on exit.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=g-import-not-at-top
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  cc.reset_cache()
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  try:
    yield
  finally:
    cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def subprocess_env(num_devices: int | None = None, *, cache_dir: str | None = None,
                   **extra: str) -> dict:
  """The environment for a child Python: this package importable, ``num_devices`` CPU devices,
  XLA's quick (-O0) CPU backend, and the persistent compilation cache ``cache_dir`` when given."""
  env = dict(os.environ)
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  if num_devices:
    flags.append(f"--xla_force_host_platform_device_count={num_devices}")
  # Tiny programs run in milliseconds; compiling them is what tests wait for (~25% less at -O0).
  flags.append("--xla_backend_optimization_level=0")
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  here = os.path.dirname(os.path.abspath(__file__))  # this module, for the child's `import support`
  env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
  env.update(extra)
  return env


PYTHON = sys.executable


__all__ = ["PYTHON", "compilation_cache", "subprocess_env", "tiny_arrays", "tiny_config", "tiny_source"]


def assert_selection_ignores_test_labels(run, rows, trials, monkeypatch):
  """Runs the benchmark again (``run() -> (rows, trials)``) with every test label moved to the
  next class and asserts that nothing but test scores changed: the same trials with the same
  validation scores, the same choices, the test split opened only inside a kind's ``test``.
  ``rows``/``trials``: the first run's. Returns the second run's rows."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from jtransfer.benchmark import kinds  # pylint: disable=g-import-not-at-top
  from jtransfer.data import sources  # pylint: disable=g-import-not-at-top
  opened, phase = [], {"test": False}
  original_open = sources.open_split

  def open_split(cfg, split=None, *, train=False):
    s = original_open(cfg, split, train=train)
    name = split or (cfg.train_split if train else cfg.eval_split)
    opened.append((name, phase["test"]))
    if name != "test":
      return s
    read = s._read_local  # pylint: disable=protected-access
    shuffle = lambda ex: {"image": ex["image"], "label": (ex["label"] + 1) % 10}
    return dataclasses.replace(s, _read_local=lambda p, c: read(p, c).map(shuffle))

  def test_phase(original_test):  # every kind's evaluation of its chosen point
    def wrapped(*args, **kwargs):
      phase["test"] = True
      try:
        return original_test(*args, **kwargs)
      finally:
        phase["test"] = False
    return wrapped

  monkeypatch.setattr(sources, "open_split", open_split)
  for kind in kinds.KINDS.values():
    monkeypatch.setattr(kind, "test", test_phase(kind.test))
  shuffled, shuffled_trials = run()
  assert [o for o in opened if o[0] == "test"]
  assert all(in_test for name, in_test in opened if name == "test")
  key = lambda t: t["trial"]
  assert len(trials) == len(shuffled_trials)
  for a, b in zip(sorted(trials, key=key), sorted(shuffled_trials, key=key)):
    assert a["trial"] == b["trial"] and a["val_top1"] == b["val_top1"]
  by_cell = lambda rs: sorted(rs, key=lambda r: r["cell"])
  for a, b in zip(by_cell(rows), by_cell(shuffled)):
    assert a["chosen"] == b["chosen"] and a["val_top1"] == b["val_top1"]
  assert any(a["test_top1"] != b["test_top1"] for a, b in zip(by_cell(rows), by_cell(shuffled)))
  return shuffled


def random_pretrained(directory: str) -> str:
  """Random-init 'pretrained' weights of ``tiny_experiment``'s model, with their model.json, in
  ``directory/w``: a benchmark can start from them without a pretraining run."""
  import jax  # pylint: disable=g-import-not-at-top

  from jtransfer import models, weights  # pylint: disable=g-import-not-at-top
  cfg = tiny_experiment("uci_digits", 1)
  model = models.from_config(cfg.model, num_classes=10)
  variables = model.init(init_key(), np.zeros((1, 8, 8, 3), np.float32), train=False)
  path = os.path.join(directory, "w")
  weights.save(jax.tree.map(np.asarray, dict(variables)), path,
               metadata=models.meta(cfg.model, num_classes=10))
  return path
