"""The real train step on a small-stem ResNet-18 (32 px, batch 8): freezing costs no backward,
frozen parameters and BatchNorm statistics stay bitwise, LP-FT continues from the probe's head.
The flop counts hold with XLA's convolutions and with ``conv_impl='auto'``'s custom-VJP ones (its
XLA/matmul formulations; on oneDNN's custom calls XLA counts no flops, so tests/test_onednn.py
counts the kernels instead).

Each step is compiled once (``jit(...).lower(...).compile()``); the same executable gives the flop
count and runs the steps.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jtransfer import models, optim
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

IMG, BATCH, NUM_CLASSES = 32, 8, 10


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per computation.
    cost = cost[0]
  return float(cost["flops"])


@functools.lru_cache(maxsize=None)
def _pretrained():
  """Stand-in pretrained weights and statistics, drawn with numpy (compiling model.init is slow)."""
  model = models.create("resnet18", num_classes=NUM_CLASSES, small_stem=True)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, IMG, IMG, 3)))
  rng = np.random.default_rng(0)

  def draw(path, s):
    x = rng.normal(size=s.shape).astype(np.float32)
    if path.endswith("kernel"):
      return x * np.sqrt(2.0 / np.prod(s.shape[:-1]), dtype=np.float32)
    if path.endswith(("scale", "var")):
      return 1.0 + 0.1 * np.abs(x)
    return 0.1 * x

  variables = optim.rules.map_paths(draw, shapes)
  return variables["params"], variables["batch_stats"]


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(BATCH, IMG, IMG, 3)).astype(np.float32),
          "label": rng.integers(0, NUM_CLASSES, size=(BATCH,)).astype(np.int32)}


def _loss_fn(model):
  def loss_fn(params, batch_stats, batch, rng):
    (logits, _), mutated = model.apply(
        {"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"], rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (mutated["batch_stats"], {"accuracy": jnp.mean(logits.argmax(-1) == batch["label"])})
  return loss_fn


def _optim_config(name):
  cfg = optim.get_config()
  cfg.update(dict(name=name, lr=1e-2, schedule="constant", weight_decay=0.05, clip_norm=1.0))
  return cfg


def _build(rules, opt_name, *, bn_mode="frozen", schedule_start=0, conv_impl="xla"):
  """Everything a trainer builds for one phase, with the step compiled for (IMG, BATCH)."""
  params, batch_stats = _pretrained()
  labels = optim.label_params(params, rules)
  mask = optim.trainable_mask(labels)
  model = models.create("resnet18", num_classes=NUM_CLASSES, small_stem=True,
                        frozen_bn=optim.frozen_bn_patterns(labels, bn_mode), conv_impl=conv_impl)
  tx = optim.build_optimizer(_optim_config(opt_name), rules, params, total_steps=100,
                             schedule_start=schedule_start)
  state = TrainState.create(params=params, batch_stats=batch_stats, tx=tx)
  step = make_train_step(_loss_fn(model), tx, mask)
  compiled = jax.jit(step).lower(state, _batch(), jax.random.key(1)).compile()
  return types.SimpleNamespace(model=model, labels=labels, mask=mask, tx=tx, state=state,
                               compiled=compiled)


@functools.lru_cache(maxsize=None)
def _setup(strategy, opt_name="adamw", bn_mode="frozen", conv_impl="xla"):
  """A one-phase preset with its default arguments (last_stages: k=1)."""
  rules = optim.phases(optim.get_freezing_config(strategy), spec=models.get_spec("resnet18"))[0].param_rules
  return _build(rules, opt_name, bn_mode=bn_mode, conv_impl=conv_impl)


def _run(setup, steps=3):
  state = setup.state
  for i in range(steps):
    state, metrics = setup.compiled(state, _batch(i), jax.random.key(1))
  return state, metrics


def _bitwise_equal(a, b):
  return np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


def _leaves(tree):
  return {optim.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@functools.lru_cache(maxsize=None)
def _forward_flops(conv_impl="xla"):
  """A train-mode forward of the linear-probe model (its BatchNorms frozen)."""
  model = _setup("linear_probe", conv_impl=conv_impl).model
  params, batch_stats = _pretrained()
  fwd = lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  return _flops(jax.jit(fwd).lower({"params": params, "batch_stats": batch_stats},
                                   _batch()["image"]).compile())


@pytest.fixture(params=["xla", "auto"])
def conv_impl(request, monkeypatch):
  monkeypatch.setenv("JTRANSFER_ONEDNN", "0")  # 'auto' without oneDNN: XLA counts every flop
  return request.param


def test_linear_probe_step_costs_no_more_than_a_forward(conv_impl):
  # adamw + weight decay + clipping + gradient/param/update norms, all inside one jit.
  probe = _flops(_setup("linear_probe", conv_impl=conv_impl).compiled)
  assert probe <= 1.15 * _forward_flops(conv_impl)


def test_last_stage_step_costs_clearly_less_than_full_fine_tune(conv_impl):
  full = _flops(_setup("full_ft", conv_impl=conv_impl).compiled)
  last = _flops(_setup("last_stages", conv_impl=conv_impl).compiled)
  assert full >= 2.5 * _forward_flops(conv_impl)  # The full step really has a backward pass ...
  assert last <= 0.6 * full                        # ... and the last-stage one only a small part.


@pytest.mark.parametrize("opt_name, state_copies", [("adamw", 2), ("momentum", 1)])
def test_frozen_params_and_their_batchnorm_stats_stay_bitwise(opt_name, state_copies):
  setup = _setup("last_stages", opt_name)
  params, batch_stats = _pretrained()
  state, metrics = _run(setup)
  assert np.isfinite(float(metrics["loss"]))
  mask = _leaves(setup.mask)
  new_params, old_params = _leaves(state.params), _leaves(params)
  for path, trainable in mask.items():
    same = _bitwise_equal(new_params[path], old_params[path])
    assert same != trainable, f"{path}: trainable={trainable} but bitwise same={same}"
  new_stats, old_stats = _leaves(state.batch_stats), _leaves(batch_stats)
  for path in old_stats:
    same = _bitwise_equal(new_stats[path], old_stats[path])
    assert same == (not path.startswith("layer4/")), path
  # No optimizer state for frozen leaves: the moments cover exactly the trainable elements.
  n_trainable = sum(x.size for p, x in old_params.items() if mask[p])
  arrays = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x)]
  assert sum(x.size for x in arrays) == state_copies * n_trainable


def test_bn_mode_adapt_lets_a_frozen_backbone_update_its_statistics():
  setup = _setup("linear_probe", "adamw", "adapt")
  params, batch_stats = _pretrained()
  state, _ = _run(setup, steps=1)
  assert _bitwise_equal(state.params["layer1"]["0"]["conv1"]["kernel"],
                        params["layer1"]["0"]["conv1"]["kernel"])
  assert not _bitwise_equal(state.batch_stats["layer1"]["0"]["bn1"]["mean"],
                            batch_stats["layer1"]["0"]["bn1"]["mean"])


def test_lp_ft_second_phase_starts_from_the_probe_head():
  fz = optim.get_freezing_config("lp_ft", switch_step=2, ft_lr_mult=0.1)
  probe_phase, ft_phase = optim.phases(fz, spec=models.get_spec("resnet18"))
  params, _ = _pretrained()
  probe = _setup("linear_probe")
  assert probe_phase.param_rules == optim.phases(optim.get_freezing_config("linear_probe"), spec=models.get_spec("resnet18"))[
      0].param_rules
  state, _ = _run(probe, steps=ft_phase.start_step)
  probe_head = state.params["fc"]
  assert not _bitwise_equal(probe_head["kernel"], params["fc"]["kernel"])

  ft_rules = ft_phase.param_rules
  ft_tx = optim.build_optimizer(_optim_config("adamw"), ft_rules, params, total_steps=100,
                                schedule_start=ft_phase.schedule_start)
  state = state.next_phase(ft_tx, restart=ft_phase.restart)
  assert int(state.step) == ft_phase.start_step
  assert _bitwise_equal(state.params["fc"]["kernel"], probe_head["kernel"])
  assert all(not np.any(x) for x in jax.tree.leaves(state.opt_state) if np.ndim(x))  # Fresh.
  assert all(jax.tree.leaves(optim.trainable_mask(optim.label_params(params, ft_rules))))
  # Its optimizer state is the fine-tune's own (the full phase switch runs in test_step_phases).
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(ft_tx.init(params))
