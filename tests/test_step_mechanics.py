"""make_train_step on a tiny two-layer model: accumulation, cross-replica means, EMA, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jtransfer import optim
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

PARAMS = {"body": {"kernel": jnp.asarray(np.random.default_rng(0).normal(size=(4, 8)), jnp.float32)},
          "fc": {"kernel": jnp.asarray(np.random.default_rng(1).normal(size=(8, 3)), jnp.float32),
                 "bias": jnp.zeros((3,))}}
# 'moving' updates like BatchNorm statistics; 'fixed' is returned as it came (a frozen BatchNorm).
STATS = {"moving": jnp.zeros((8,)), "fixed": jnp.full((8,), 0.3)}
BATCH = {"x": jnp.asarray(np.random.default_rng(2).normal(size=(6, 4)), jnp.float32),
         "y": jnp.asarray([0, 1, 2, 0, 1, 2])}
PROBE = [(r"^fc/", 1.0), (r".*", "frozen")]


def loss_fn(params, stats, batch, rng):
  del rng
  h = jnp.tanh(batch["x"] @ params["body"]["kernel"])
  logits = h @ params["fc"]["kernel"] + params["fc"]["bias"]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  new_stats = {"moving": 0.9 * stats["moving"] + 0.1 * h.mean(0), "fixed": stats["fixed"]}
  return loss, (new_stats, {"mean_logit": logits.mean()})


def _setup(rules, **step_kw):
  cfg = optim.get_config()
  cfg.update(dict(name="sgd", lr=0.5, schedule="constant"))
  tx = optim.build_optimizer(cfg, rules, PARAMS, total_steps=10)
  mask = optim.trainable_mask(optim.label_params(PARAMS, rules))
  state = TrainState.create(params=PARAMS, batch_stats=STATS, tx=tx,
                            ema=step_kw.get("ema_decay") is not None)
  return state, make_train_step(loss_fn, tx, mask, **step_kw)


def test_metrics_are_over_trainable_parameters_only():
  state, step = _setup(PROBE)
  new, metrics = jax.jit(step)(state, BATCH, jax.random.key(0))
  g = jax.grad(lambda p: loss_fn(p, STATS, BATCH, None)[0])(PARAMS)["fc"]
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(g), rtol=1e-5)
  np.testing.assert_allclose(metrics["update_norm"], 0.5 * optax.tree.norm(g), rtol=1e-5)
  np.testing.assert_allclose(metrics["param_norm"], optax.tree.norm(new.params["fc"]), rtol=1e-5)
  assert {"loss", "mean_logit"} <= set(metrics) and int(new.step) == 1
  assert new.params["body"]["kernel"] is not None
  np.testing.assert_array_equal(new.params["body"]["kernel"], PARAMS["body"]["kernel"])


def test_accumulation_matches_one_big_batch():
  state, step = _setup([(".*", 1.0)])
  _, step2 = _setup([(".*", 1.0)], accum_steps=2)
  big, m1 = jax.jit(step)(state, BATCH, jax.random.key(0))
  acc, m2 = jax.jit(step2)(state, BATCH, jax.random.key(0))
  for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(acc.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
  # Statistics update once per microbatch, as a framework without accumulation would.
  h = jnp.tanh(BATCH["x"] @ PARAMS["body"]["kernel"])
  expected = 0.9 * (0.1 * h[:3].mean(0)) + 0.1 * h[3:].mean(0)
  np.testing.assert_allclose(acc.batch_stats["moving"], expected, rtol=1e-5)
  np.testing.assert_array_equal(acc.batch_stats["fixed"], STATS["fixed"])


def test_cross_replica_means_match_the_global_batch():
  state, step = _setup(PROBE)
  _, pstep = _setup(PROBE, axis_name="batch")
  shards = jax.tree.map(lambda x: x.reshape(3, 2, *x.shape[1:]), BATCH)
  replicas, metrics = jax.jit(jax.vmap(pstep, in_axes=(None, 0, None), axis_name="batch"))(
      state, shards, jax.random.key(0))
  single, m = jax.jit(step)(state, BATCH, jax.random.key(0))
  for r in range(3):
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(replicas.params)):
      np.testing.assert_allclose(a, b[r], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(replicas.batch_stats["moving"][r], single.batch_stats["moving"],
                               rtol=1e-5)
    np.testing.assert_array_equal(replicas.batch_stats["fixed"][r], STATS["fixed"])  # Bitwise.
    np.testing.assert_allclose(metrics["loss"][r], m["loss"], rtol=1e-5)


def test_ema_tracks_trainable_params_and_keeps_frozen_ones():
  state, step = _setup(PROBE, ema_decay=0.75)
  new, _ = jax.jit(step)(state, BATCH, jax.random.key(0))
  np.testing.assert_allclose(new.ema_params["fc"]["kernel"],
                             0.75 * PARAMS["fc"]["kernel"] + 0.25 * new.params["fc"]["kernel"],
                             rtol=1e-6)
  np.testing.assert_array_equal(new.ema_params["body"]["kernel"], PARAMS["body"]["kernel"])


def test_step_errors():
  cfg = optim.get_config()
  tx = optim.build_optimizer(cfg, PROBE, PARAMS, total_steps=10)
  all_frozen = jax.tree.map(lambda _: False, PARAMS)
  with pytest.raises(ValueError, match="Nothing to train"):
    make_train_step(loss_fn, tx, all_frozen)
  with pytest.raises(ValueError, match="accum_steps"):
    make_train_step(loss_fn, tx, optim.trainable_mask(optim.label_params(PARAMS, PROBE)),
                    accum_steps=0)
  state, step = _setup(PROBE, accum_steps=4)
  with pytest.raises(ValueError, match="Batch of 6 does not split into 4"):
    step(state, BATCH, jax.random.key(0))
  state, _ = _setup(PROBE)
  _, step = _setup(PROBE, ema_decay=0.9)
  with pytest.raises(ValueError, match="ema_params is None"):
    step(state, BATCH, jax.random.key(0))
