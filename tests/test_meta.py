"""Reptile's update against plain train steps, episodes and class splits, nearest class mean."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from jtransfer import optim, weights
from jtransfer.benchmark import evaluators
from jtransfer.methods import reptile
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

WAYS, HIDDEN = 5, 16


@functools.cache
def digits():
  d = load_digits()
  return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


def init_model(seed: int = 0):
  """A small MLP whose 'bn' layer has flax BatchNorm's layout (scale/bias, mean/var) and a
  ``WAYS``-way head 'fc'."""
  rng = np.random.default_rng(seed)
  params = {"body": {"kernel": jnp.asarray(rng.normal(size=(64, HIDDEN)) / 8, jnp.float32)},
            "bn": {"scale": jnp.ones((HIDDEN,)), "bias": jnp.zeros((HIDDEN,))},
            "fc": {"kernel": jnp.asarray(rng.normal(size=(HIDDEN, WAYS)) / 4, jnp.float32),
                   "bias": jnp.zeros((WAYS,))}}
  stats = {"bn": {"mean": jnp.zeros((HIDDEN,)), "var": jnp.ones((HIDDEN,))}}
  return params, stats


def loss_fn(params, stats, batch, rng):
  del rng
  h = batch["image"] @ params["body"]["kernel"]
  mu, var = h.mean(0), h.var(0)
  h = (h - mu) / jnp.sqrt(var + 1e-5) * params["bn"]["scale"] + params["bn"]["bias"]
  logits = jnp.tanh(h) @ params["fc"]["kernel"] + params["fc"]["bias"]
  new_stats = {"bn": {"mean": 0.9 * stats["bn"]["mean"] + 0.1 * mu,
                      "var": 0.9 * stats["bn"]["var"] + 0.1 * var}}
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  return loss, (new_stats, {})


def setup(rules=((".*", 1.0),)):
  params, stats = init_model()
  cfg = optim.get_config()
  cfg.update(dict(name="adamw", lr=0.01, weight_decay=0.01, clip_norm=1.0, schedule="constant"))
  tx = optim.build_optimizer(cfg, list(rules), params, total_steps=100)
  return params, stats, tx, optim.trainable_mask(optim.label_params(params, list(rules)))


def sampler(shots=3, meta_batch=1, seed=0):
  x, y = digits()
  return reptile.episode_sampler(x, y, classes=np.arange(10), ways=WAYS, shots=shots,
                              meta_batch=meta_batch, seed=seed)


def rng_of(seed, t, e):
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), t), e)


@pytest.mark.parametrize("head_init", reptile.HEAD_INITS)
def test_one_inner_step_with_meta_lr_one_is_one_plain_step(head_init):
  params, stats, tx, mask = setup()
  sample = sampler()
  new, new_stats, losses = reptile.reptile(params, stats, loss_fn=loss_fn, tx=tx, mask=mask,
                                        sample=sample, inner_steps=1, meta_steps=1, meta_lr=1.0,
                                        head_init=head_init, seed=4)
  start = reptile.reset_head(params) if head_init == "zero" else params
  episode = jax.tree.map(lambda a: a[0], sample(0))
  plain, metrics = jax.jit(make_train_step(loss_fn, tx, mask))(
      TrainState.create(params=start, batch_stats=stats, tx=tx), episode, rng_of(4, 0, 0))
  expected = dict(plain.params)
  if head_init == "zero":  # The documented update: the head is reset, not meta-learned.
    expected["fc"] = jax.tree.map(jnp.zeros_like, params["fc"])
  for a, b in zip(jax.tree.leaves((expected, plain.batch_stats)),
                  jax.tree.leaves((new, new_stats))):
    np.testing.assert_array_equal(a, b)
  assert losses.shape == (1, 1, 1) and losses[0, 0, 0] == metrics["loss"]


def test_meta_step_moves_theta_toward_the_mean_of_the_episodes_solutions():
  params, stats, tx, mask = setup()
  sample = sampler(meta_batch=2)
  new, new_stats, _ = reptile.reptile(params, stats, loss_fn=loss_fn, tx=tx, mask=mask,
                                   sample=sample, inner_steps=2, meta_steps=1, meta_lr=0.25,
                                   head_init="keep", seed=1)
  step = jax.jit(make_train_step(loss_fn, tx, mask))
  phis = []
  for e in range(2):
    s = TrainState.create(params=params, batch_stats=stats, tx=tx)
    for _ in range(2):
      s, _ = step(s, jax.tree.map(lambda a: a[e], sample(0)), rng_of(1, 0, e))
    phis.append((s.params, s.batch_stats))
  interp = lambda theta, a, b: 0.75 * theta + 0.25 * (a + b) / 2
  expected = jax.tree.map(interp, (params, stats), *phis)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves((new, new_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_frozen_leaves_stay_bitwise_and_the_result_saves_as_weights(tmp_path):
  params, stats, tx, mask = setup(rules=((r"^fc/", 1.0), (r"^bn/", 1.0), (".*", "frozen")))
  new, new_stats, losses = reptile.reptile(params, stats, loss_fn=loss_fn, tx=tx, mask=mask,
                                        sample=sampler(meta_batch=2), inner_steps=3,
                                        meta_steps=4, meta_lr=0.5, seed=0)
  np.testing.assert_array_equal(new["body"]["kernel"], params["body"]["kernel"])
  assert not np.array_equal(new["bn"]["scale"], params["bn"]["scale"])
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(new["fc"]))  # head_init='zero'
  assert losses.shape == (4, 2, 3) and np.all(np.isfinite(losses))
  path = weights.save({"params": new, "batch_stats": new_stats}, tmp_path / "reptile")
  loaded = weights.load(path)
  for a, b in zip(jax.tree.leaves((new, new_stats)),
                  jax.tree.leaves((loaded["params"], loaded["batch_stats"]))):
    np.testing.assert_array_equal(a, b)


def test_episodes_are_deterministic_distinct_and_class_disjoint():
  x, y = digits()
  source, target = reptile.class_split(10, num_target=4, seed=3)
  assert not set(source) & set(target) and sorted([*source, *target]) == list(range(10))
  again = reptile.class_split(10, num_target=4, seed=3)
  assert np.array_equal(again[0], source) and np.array_equal(again[1], target)
  assert any(not np.array_equal(reptile.class_split(10, num_target=4, seed=s)[1], target)
             for s in range(4, 8))
  ep = reptile.sample_episode(x, y, classes=source, ways=4, shots=2, queries=3, seed=0, episode=7)
  same = reptile.sample_episode(x, y, classes=source, ways=4, shots=2, queries=3, seed=0, episode=7)
  other = reptile.sample_episode(x, y, classes=source, ways=4, shots=2, queries=3, seed=0, episode=8)
  np.testing.assert_array_equal(ep["support"]["image"], same["support"]["image"])
  assert not np.array_equal(ep["support"]["image"], other["support"]["image"])
  assert len(set(ep["classes"])) == 4 and set(ep["classes"]) <= set(source)
  assert ep["support"]["image"].shape == (8, 64) and ep["query"]["label"].shape == (12,)
  np.testing.assert_array_equal(ep["support"]["label"], np.repeat(np.arange(4), 2))
  # Every example is of its episode class, and none repeats between support and query.
  rows = [np.flatnonzero((x == img).all(1))[0] for img in np.concatenate(
      [ep["support"]["image"], ep["query"]["image"]])]
  assert len(set(rows)) == 20
  labels = np.concatenate([ep["support"]["label"], ep["query"]["label"]])
  np.testing.assert_array_equal(y[rows], ep["classes"][labels])
  batch = sampler(shots=2, meta_batch=3)(5)
  assert batch["image"].shape == (3, WAYS * 2, 64) and batch["label"].shape == (3, WAYS * 2)
  with pytest.raises(ValueError, match="5-way episodes need"):
    reptile.sample_episode(x, y, classes=target, ways=5, shots=1, seed=0, episode=0)


@pytest.mark.parametrize("cosine", [True, False])
def test_nearest_class_mean_on_separable_data(cosine):
  rng = np.random.default_rng(0)
  centres = 5.0 * rng.normal(size=(4, 8))
  y = np.repeat(np.arange(4), 5)
  x = centres[y] + 0.3 * rng.normal(size=(20, 8))
  ty = np.repeat(np.arange(4), 10)
  tx = centres[ty] + 0.3 * rng.normal(size=(40, 8))
  out = evaluators.nearest_class_mean(x, y, tx, num_classes=5, cosine=cosine)
  assert out["logits"].shape == (40, 5) and out["logits"].dtype == np.float32
  np.testing.assert_array_equal(out["predictions"], ty)
  assert np.all(out["logits"][:, 4] == -np.inf)  # class 4 has no training example
