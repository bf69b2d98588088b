"""build_optimizer / init_opt_state / schedules on tiny trees (and ResNet-18's layout, shapes only)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jtransfer import models, optim

# Two leaves with distinct shapes, so a state leaf's shape says whose it is.
TREE = {"backbone": {"kernel": jnp.full((3, 3), 2.0)}, "head": {"bias": jnp.full((2,), 2.0)}}
PROBE = [(r"^head/", 1.0), (r".*", "frozen")]


def _cfg(**kw):
  cfg = optim.get_config()
  cfg.update({"schedule": "constant", "lr": 0.1, **kw})
  return cfg


def _partition(state):
  is_p = lambda x: isinstance(x, optax.transforms.PartitionState)
  return [x for x in jax.tree.leaves(state, is_leaf=is_p) if is_p(x)][0].inner_states


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_frozen_leaves_hold_no_state_and_never_move(name):
  cfg = _cfg(name=name, weight_decay=0.1, wd_mask=".*", clip_norm=1.0)
  tx = optim.build_optimizer(cfg, PROBE, TREE, total_steps=10)
  state = optim.init_opt_state(tx, TREE)
  shapes = {np.shape(x) for x in jax.tree.leaves(state)}
  assert (3, 3) not in shapes, f"{name} keeps state for the frozen leaf"
  grads = jax.tree.map(jnp.ones_like, TREE)
  params = TREE
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert np.array_equal(params["backbone"]["kernel"], TREE["backbone"]["kernel"])
  assert not np.array_equal(params["head"]["bias"], TREE["head"]["bias"])


def test_clear_errors_for_names_and_masks():
  with pytest.raises(ValueError, match="Unknown optimizer 'adamx'; known: sgd, momentum"):
    optim.build_optimizer(_cfg(name="adamx"), PROBE, TREE, total_steps=10)
  with pytest.raises(ValueError, match="Unknown schedule 'cosine'"):
    optim.build_optimizer(_cfg(schedule="cosine"), PROBE, TREE, total_steps=10)
  with pytest.raises(ValueError, match="wd_mask 'scale' matches no parameter"):
    optim.build_optimizer(_cfg(weight_decay=0.1, wd_mask="scale"), PROBE, TREE, total_steps=10)


def test_default_wd_mask_decays_kernels_not_biases_coupled_and_decoupled():
  tree = {"fc": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)},
          "bn": {"scale": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)}}
  zeros = jax.tree.map(jnp.zeros_like, tree)
  for name in ("sgd", "adamw"):
    tx = optim.build_optimizer(_cfg(name=name, weight_decay=0.5), [(".*", 1.0)], tree,
                               total_steps=10)
    updates, _ = tx.update(zeros, optim.init_opt_state(tx, tree), tree)
    np.testing.assert_allclose(updates["fc"]["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)
    for leaf in (updates["fc"]["bias"], updates["bn"]["scale"], updates["bn"]["bias"]):
      np.testing.assert_array_equal(leaf, 0.0)


def test_clipping_sees_only_trainable_gradients():
  tx = optim.build_optimizer(_cfg(name="sgd", clip_norm=1.0), PROBE, TREE, total_steps=10)
  grads = {"backbone": {"kernel": jnp.zeros((3, 3))}, "head": {"bias": jnp.full((2,), 30.0)}}
  updates, _ = tx.update(grads, optim.init_opt_state(tx, TREE), TREE)
  np.testing.assert_allclose(optax.tree.norm(updates), 0.1, rtol=1e-5)


def test_layerwise_decay_gives_per_stage_ratios():
  model = models.create("resnet18", num_classes=10, small_stem=True)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  fz = optim.get_freezing_config("layerwise_decay", decay=0.5)
  rules = optim.phases(fz, spec=models.get_spec("resnet18"))[0].param_rules
  tx = optim.build_optimizer(_cfg(name="sgd"), rules, params, total_steps=10)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), optim.init_opt_state(tx, params),
                         params)
  lr = lambda *path: -float(np.unique(np.asarray(_get(updates, path)))[0])
  head = lr("fc", "kernel")
  np.testing.assert_allclose(head, 0.1, rtol=1e-6)
  for depth, path in enumerate([("layer4", "1", "conv2", "kernel"), ("layer3", "0", "bn1", "bias"),
                                ("layer2", "0", "downsample_conv", "kernel"),
                                ("layer1", "1", "conv1", "kernel"), ("conv1", "kernel"),
                                ("bn1", "scale")]):
    expected = 0.1 * 0.5 ** min(depth + 1, 5)
    np.testing.assert_allclose(lr(*path), expected, rtol=1e-6, err_msg="/".join(path))


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def test_schedules():
  cfg = _cfg(lr=1.0, warmup_steps=10, schedule="warmup_cosine", end_lr_ratio=0.1)
  s = optim.make_schedule(cfg, total_steps=110)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110), s(500)],
                             [0.0, 0.5, 1.0, 0.55, 0.1, 0.1], rtol=1e-6, atol=1e-7)
  cfg.schedule = "warmup_step"  # BiT-HyperRule: ×0.1 at 30%, 60%, 90%.
  s = optim.make_schedule(cfg, total_steps=100)
  np.testing.assert_allclose([s(29), s(30), s(59), s(60), s(90)], [1, 0.1, 0.1, 0.01, 0.001],
                             rtol=1e-5)
  cfg.schedule = "constant"
  s = optim.make_schedule(cfg, total_steps=100, start_step=50, lr_mult=0.5)
  np.testing.assert_allclose([s(50), s(55), s(60), s(99)], [0.0, 0.25, 0.5, 0.5], rtol=1e-6)
  with pytest.raises(ValueError, match="increasing fractions"):
    optim.make_schedule(_cfg(schedule="warmup_step", decay_boundaries=(30, 60)), total_steps=100)


def test_rule_with_its_own_schedule():
  rules = [(r"^head/", dict(lr_mult=2.0, schedule=dict(lr=1.0, warmup_steps=4))),
           (r".*", 1.0)]
  tx = optim.build_optimizer(_cfg(name="sgd"), rules, TREE, total_steps=10)
  state = optim.init_opt_state(tx, TREE, step=2)  # Schedules follow the global step.
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, TREE), state, TREE)
  np.testing.assert_allclose(updates["head"]["bias"], -2.0 * 1.0 * 2 / 4, rtol=1e-6)
  np.testing.assert_allclose(updates["backbone"]["kernel"], -0.1, rtol=1e-6)


def test_state_of_unchanged_rules_carries_across_phases():
  cfg = _cfg(name="adam")
  tx_a = optim.build_optimizer(cfg, PROBE, TREE, total_steps=10)
  state = optim.init_opt_state(tx_a, TREE)
  for _ in range(3):
    _, state = tx_a.update(jax.tree.map(jnp.ones_like, TREE), state, TREE)
  tx_b = optim.build_optimizer(cfg, [(r"^head/", 1.0), (r"^backbone/", 1.0)], TREE,
                               total_steps=10)
  carried = _partition(optim.init_opt_state(tx_b, TREE, step=3, previous=state))
  head = carried["^head/ lr×1"]
  old_head = _partition(state)["^head/ lr×1"]
  assert jax.tree.all(jax.tree.map(np.array_equal, head, old_head))
  new = carried["^backbone/ lr×1"]
  assert int(new.inner_state[0].count) == 0  # Adam restarts its bias correction ...
  assert int(new.inner_state[1].count) == 3  # ... while the schedule follows the global step.
  fresh = _partition(optim.init_opt_state(tx_b, TREE, step=3))["^head/ lr×1"]
  assert int(fresh.inner_state[0].count) == 0


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_the_learning_rate_as_an_input_gives_the_same_updates(name):
  """lr_input=True builds for lr 1 and the caller scales the updates by cfg.lr: the same run
  (warmup and cosine, decay, clipping, a second group at its own lr) up to rounding."""
  tree = {"fc": {"kernel": jnp.full((3, 3), 2.0)}, "head": {"kernel": jnp.full((2, 2), -1.0)}}
  rules = [(r"^head/", {"lr_mult": 2.0, "schedule": {"lr": 0.05}}), (r".*", 0.5)]
  cfg = _cfg(name=name, lr=0.3, schedule="warmup_cosine", warmup_steps=2, weight_decay=0.1,
             wd_mask=".*", clip_norm=5.0)
  baked = optim.build_optimizer(cfg, rules, tree, total_steps=6)
  scaled = optim.build_optimizer(cfg, rules, tree, total_steps=6, lr_input=True)
  a = b = tree
  sa, sb = optim.init_opt_state(baked, tree), optim.init_opt_state(scaled, tree)
  for i in range(5):
    grads = jax.tree.map(lambda x: jnp.sin(x * (i + 1.0)) + 0.3, a)
    ua, sa = baked.update(grads, sa, a)
    ub, sb = scaled.update(grads, sb, b)
    a = optax.apply_updates(a, ua)
    b = optax.apply_updates(b, jax.tree.map(lambda u: u * cfg.lr, ub))
  assert not np.allclose(a["fc"]["kernel"], tree["fc"]["kernel"])
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_the_learning_rate_as_an_input_may_be_zero_unless_a_rule_is_relative_to_it():
  optim.build_optimizer(_cfg(lr=0.0), PROBE, TREE, total_steps=10, lr_input=True)
  own = [(r"^head/", {"lr_mult": 1.0, "schedule": {"lr": 0.1}}), (r".*", "frozen")]
  with pytest.raises(ValueError, match=r"sets its own lr relative to optim.lr, which must then be > 0"):
    optim.build_optimizer(_cfg(lr=0.0), own, TREE, total_steps=10, lr_input=True)
  with pytest.raises(ValueError, match="lr must be >= 0"):
    optim.build_optimizer(_cfg(lr=-1.0), PROBE, TREE, total_steps=10)
