"""FedAvg: the round against a plain step and a hand-written reference, partitions, BatchNorm
statistics, frozen leaves, communication, and one vmap/mesh code path."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from jtransfer import optim
from jtransfer.methods import fedavg
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

HIDDEN = 32


def init_mlp(seed: int = 0, num_in: int = 64, num_classes: int = 10):
  """A one-hidden-layer MLP with a BatchNorm-like layer: 'bn' has scale/bias parameters and
  mean/var statistics, laid out like a flax BatchNorm. 'body' has no bias: before a BatchNorm its
  gradient is rounding noise, which Adam would blow up to ±lr and no comparison would survive."""
  rng = np.random.default_rng(seed)
  params = {
      "body": {"kernel": jnp.asarray(rng.normal(size=(num_in, HIDDEN)) / 8, jnp.float32)},
      "bn": {"scale": jnp.ones((HIDDEN,)), "bias": jnp.zeros((HIDDEN,))},
      "fc": {"kernel": jnp.asarray(rng.normal(size=(HIDDEN, num_classes)) / 6, jnp.float32),
             "bias": jnp.zeros((num_classes,))}}
  stats = {"bn": {"mean": jnp.zeros((HIDDEN,)), "var": jnp.ones((HIDDEN,))}}
  return params, stats


def mlp_apply(params, stats, x, *, train: bool, use_bn: bool = True, frozen_bn: bool = False):
  h = x @ params["body"]["kernel"]
  new_stats = stats
  if use_bn:
    if train and not frozen_bn:
      mu, var = h.mean(0), h.var(0)
      new_stats = {"bn": {"mean": 0.9 * stats["bn"]["mean"] + 0.1 * mu,
                          "var": 0.9 * stats["bn"]["var"] + 0.1 * var}}
    else:
      mu, var = stats["bn"]["mean"], stats["bn"]["var"]
    h = (h - mu) / jnp.sqrt(var + 1e-5) * params["bn"]["scale"] + params["bn"]["bias"]
  logits = jnp.tanh(h) @ params["fc"]["kernel"] + params["fc"]["bias"]
  return logits, new_stats


def make_loss(**kw):
  def loss_fn(params, stats, batch, rng):
    del rng
    logits, new_stats = mlp_apply(params, stats, batch["image"], train=True, **kw)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (new_stats, {"top1": jnp.mean(jnp.argmax(logits, -1) == batch["label"])})
  return loss_fn


# One optimizer for most tests, so the plain step compiles once (compiling dominates here).
ADAMW = dict(name="adamw", lr=3e-3, weight_decay=0.01, clip_norm=1.0)


def setup(rules=((".*", 1.0),), name="sgd", lr=0.1, **optim_kw):
  params, stats = init_mlp()
  cfg = optim.get_config()
  cfg.update(dict(name=name, lr=lr, schedule="constant", **optim_kw))
  tx = optim.build_optimizer(cfg, list(rules), params, total_steps=1000)
  mask = optim.trainable_mask(optim.label_params(params, list(rules)))
  return params, stats, tx, mask


@functools.cache
def digits():
  d = load_digits()
  x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)
  return (x[:1347], y[:1347]), (x[1347:], y[1347:])


def accuracy(params, stats, x, y, **kw):
  logits, _ = mlp_apply(params, stats, x, train=False, **kw)
  return float(np.mean(np.argmax(logits, -1) == y))


@functools.cache
def plain_step():
  """The jitted train step of ``setup(**ADAMW)`` with ``make_loss()``."""
  _, _, tx, mask = setup(**ADAMW)
  return jax.jit(make_train_step(make_loss(), tx, mask))


def reference_round(state, batches, weights, rng, tx, *, bn_stats, local_steps):
  """FedAvg written out client by client with the plain jitted step, for comparison."""
  step = plain_step()
  k = len(weights)
  rngs = fedavg.client_rngs(rng, state.round, k)
  w = np.asarray(weights, np.float64) / np.sum(weights)
  params_c, stats_c = [], []
  for c in range(k):
    stats = state.client_stats if bn_stats == "local" else None
    stats = jax.tree.map(lambda s: s[c], stats) if stats is not None else state.batch_stats
    s = TrainState.create(params=state.params, batch_stats=stats, tx=tx,
                          step=int(state.round) * local_steps)
    for e in range(local_steps):
      s, _ = step(s, jax.tree.map(lambda b: b[c, e], batches), rngs[c])
    params_c.append(s.params)
    stats_c.append(s.batch_stats)
  mean = lambda *xs: sum(wi * np.asarray(x, np.float64) for wi, x in zip(w, xs))
  params = jax.tree.map(mean, *params_c)
  return params, stats_c, jax.tree.map(mean, *stats_c)


def assert_trees_close(a, b, **kw):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bn_stats", fedavg.BN_STATS)
def test_one_client_one_local_step_is_a_plain_train_step_bitwise(bn_stats):
  params, stats, tx, mask = setup(**ADAMW)
  loss_fn = make_loss()
  (x, y), _ = digits()
  batch = {"image": x[:32], "label": y[:32]}
  rng = jax.random.key(3)
  plain, _ = plain_step()(
      TrainState.create(params=params, batch_stats=stats, tx=tx), batch,
      fedavg.client_rngs(rng, 0, 1)[0])
  fed_round = fedavg.make_fedavg_round(loss_fn, tx, mask, local_steps=1, bn_stats=bn_stats)
  state = fedavg.init_state(params, stats, num_clients=1, bn_stats=bn_stats)
  new, metrics = fed_round(state, jax.tree.map(lambda b: b[None, None], batch),
                           np.ones(1, np.float32), rng)
  for a, b in zip(jax.tree.leaves((plain.params, plain.batch_stats)),
                  jax.tree.leaves((new.params, new.batch_stats))):
    np.testing.assert_array_equal(a, b)
  if bn_stats == "local":
    for a, b in zip(jax.tree.leaves(plain.batch_stats), jax.tree.leaves(new.client_stats)):
      np.testing.assert_array_equal(a, b[0])
  assert int(new.round) == 1 and metrics["client_loss"].shape == (1,)


def test_fedavg_over_iid_clients_approaches_centralised_training():
  params, stats, tx, mask = setup(**ADAMW)
  loss_fn = make_loss()
  (x, y), (tx_, ty) = digits()
  parts = fedavg.iid_partition(len(x), 5, seed=0)
  rounds, local_steps, batch = 30, 5, 16
  fed_round = fedavg.make_fedavg_round(loss_fn, tx, mask, local_steps=local_steps)
  state = fedavg.init_state(params, stats, num_clients=5)
  for r in range(rounds):
    b = fedavg.client_batches({"image": x, "label": y}, parts, batch_size=batch,
                                 local_steps=local_steps, round_index=r, seed=0)
    state, _ = fed_round(state, b, fedavg.client_weights(parts), jax.random.key(0))
  # Centralised at equal examples and equal sequential steps: batch 5·16, rounds·local_steps.
  step = plain_step()
  cstate = TrainState.create(params=params, batch_stats=stats, tx=tx)
  order = np.random.default_rng(0).permutation(np.tile(np.arange(len(x)), 10))
  for t in range(rounds * local_steps):
    idx = order[t * 5 * batch:(t + 1) * 5 * batch]
    cstate, _ = step(cstate, {"image": x[idx], "label": y[idx]}, jax.random.key(0))
  fed_acc = accuracy(state.params, state.batch_stats, tx_, ty)
  central_acc = accuracy(cstate.params, cstate.batch_stats, tx_, ty)
  untrained = accuracy(params, stats, tx_, ty)
  assert central_acc > 0.9 and untrained < 0.3
  print(f"FedAvg {fed_acc:.3f}, centralised {central_acc:.3f}, untrained {untrained:.3f}")
  assert fed_acc > central_acc - 0.03, (fed_acc, central_acc)


@pytest.mark.parametrize("bn_stats", fedavg.BN_STATS)
def test_rounds_match_a_client_by_client_reference_with_each_bn_choice(bn_stats):
  params, stats, tx, mask = setup(**ADAMW)
  loss_fn = make_loss()
  (x, y), _ = digits()
  parts = fedavg.dirichlet_partition(y, 3, alpha=0.3, seed=1)
  weights = fedavg.client_weights(parts)
  fed_round = fedavg.make_fedavg_round(loss_fn, tx, mask, local_steps=2, bn_stats=bn_stats)
  state = fedavg.init_state(params, stats, num_clients=3, bn_stats=bn_stats)
  for r in range(2):
    b = fedavg.client_batches({"image": x, "label": y}, parts, batch_size=8, local_steps=2,
                                 round_index=r, seed=0)
    ref_params, ref_client_stats, ref_mean_stats = reference_round(
        state, b, weights, jax.random.key(1), tx, bn_stats=bn_stats, local_steps=2)
    state, _ = fed_round(state, b, weights, jax.random.key(1))
    assert_trees_close(state.params, ref_params, rtol=1e-4, atol=1e-6)
    # 'average': one global copy, the weighted mean; 'local': each client keeps its own, and the
    # global copy (for evaluation) is their weighted mean.
    assert_trees_close(state.batch_stats, ref_mean_stats, rtol=1e-4, atol=1e-6)
    if bn_stats == "local":
      for c in range(3):
        assert_trees_close(jax.tree.map(lambda s: s[c], state.client_stats),
                           ref_client_stats[c], rtol=1e-4, atol=1e-6)
    else:
      assert state.client_stats is None
  if bn_stats == "local":  # Label-skewed clients end with different statistics.
    means = np.asarray(state.client_stats["bn"]["mean"])
    assert np.abs(means[0] - means[1]).max() > 1e-3
  sent = fedavg.bytes_per_round(params, mask, num_clients=3, batch_stats=stats,
                                   bn_stats=bn_stats)
  stats_bytes = 2 * 3 * 2 * HIDDEN * 4
  assert sent["batch_stats"] == (stats_bytes if bn_stats == "average" else 0)


def test_frozen_leaves_never_move_and_are_not_communicated():
  probe = ((r"^fc/", 1.0), (".*", "frozen"))
  params, stats, tx, mask = setup(rules=probe, name="adamw", lr=0.01, weight_decay=0.1)
  loss_fn = make_loss(frozen_bn=True)
  (x, y), _ = digits()
  parts = fedavg.dirichlet_partition(y, 4, alpha=1.0, seed=0)
  fed_round = fedavg.make_fedavg_round(loss_fn, tx, mask, local_steps=3)
  state = fedavg.init_state(params, stats, num_clients=4)
  for r in range(2):
    b = fedavg.client_batches({"image": x, "label": y}, parts, batch_size=8, local_steps=3,
                                 round_index=r, seed=0)
    state, _ = fed_round(state, b, fedavg.client_weights(parts), jax.random.key(0))
  for name in ("body", "bn"):
    for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(state.params[name])):
      np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(state.batch_stats)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(params["fc"]["kernel"], state.params["fc"]["kernel"])
  sent = fedavg.bytes_per_round(params, mask, num_clients=4, batch_stats=stats)
  fc_bytes = (HIDDEN * 10 + 10) * 4
  assert sent == {"params": 2 * 4 * fc_bytes, "batch_stats": 0, "total": 2 * 4 * fc_bytes,
                  "frozen_not_sent": (64 * HIDDEN + 2 * HIDDEN) * 4}


def test_partitions_are_disjoint_covering_deterministic_and_skewed():
  _, y = digits()[0]
  for parts in (fedavg.iid_partition(len(y), 7, seed=3),
                fedavg.dirichlet_partition(y, 7, alpha=0.1, seed=3)):
    joined = np.concatenate(parts)
    assert len(joined) == len(y) and np.array_equal(np.sort(joined), np.arange(len(y)))
    assert all(len(p) >= 1 for p in parts)
  a = fedavg.dirichlet_partition(y, 7, alpha=0.1, seed=3)
  b = fedavg.dirichlet_partition(y, 7, alpha=0.1, seed=3)
  c = fedavg.dirichlet_partition(y, 7, alpha=0.1, seed=4)
  assert all(np.array_equal(p, q) for p, q in zip(a, b))
  assert any(not np.array_equal(p, q) for p, q in zip(a, c))
  sizes = [len(p) for p in fedavg.iid_partition(len(y), 7, seed=3)]
  assert max(sizes) - min(sizes) <= 1
  classes_per_client = lambda parts: np.mean(
      [(np.bincount(y[p], minlength=10) >= 0.03 * len(p)).sum() for p in parts])
  assert classes_per_client(a) < classes_per_client(
      fedavg.dirichlet_partition(y, 7, alpha=100.0, seed=3)) - 3
  with pytest.raises(ValueError, match="alpha"):
    fedavg.dirichlet_partition(y, 7, alpha=0.0, seed=0)
  with pytest.raises(ValueError, match="every one of"):
    fedavg.dirichlet_partition(y, 1000, alpha=0.01, seed=0, min_size=2, max_tries=3)


def test_client_batches_draw_from_the_clients_own_shard_deterministically():
  parts = [np.array([0, 1, 2]), np.array([3, 4, 5, 6, 7, 8, 9])]
  arrays = {"idx": np.arange(10)}
  b = fedavg.client_batches(arrays, parts, batch_size=2, local_steps=3, round_index=1, seed=0)
  assert b["idx"].shape == (2, 3, 2)
  assert set(b["idx"][0].ravel()) <= {0, 1, 2} and set(b["idx"][1].ravel()) <= set(range(3, 10))
  assert len(set(b["idx"][1].ravel())) == 6  # no repeat before the shard (7) is used up
  again = fedavg.client_batches(arrays, parts, batch_size=2, local_steps=3, round_index=1,
                                   seed=0)
  np.testing.assert_array_equal(b["idx"], again["idx"])
  other = fedavg.client_batches(arrays, parts, batch_size=2, local_steps=3, round_index=2,
                                   seed=0)
  assert not np.array_equal(b["idx"], other["idx"])


MESH_SCRIPT = textwrap.dedent("""
    import importlib.util, sys
    import jax, numpy as np
    spec = importlib.util.spec_from_file_location("tf", sys.argv[1])
    t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)
    from jtransfer.methods import fedavg
    assert len(jax.devices()) == 4, jax.devices()
    params, stats, tx, mask = t.setup(**t.ADAMW)
    (x, y), _ = t.digits()
    parts = fedavg.dirichlet_partition(y, 4, alpha=0.5, seed=0)
    out = {}
    for bn in ("local",):  # its statistics stay sharded by client; 'average' shares the code
      for n in (1, 4):
        fed_round = fedavg.make_fedavg_round(t.make_loss(), tx, mask, local_steps=2,
                                             bn_stats=bn, devices=jax.devices()[:n])
        state = fedavg.init_state(params, stats, num_clients=4, bn_stats=bn)
        for r in range(2):
          b = fedavg.client_batches({"image": x, "label": y}, parts, batch_size=8,
                                    local_steps=2, round_index=r, seed=0)
          state, _ = fed_round(state, b, fedavg.client_weights(parts), jax.random.key(0))
        out[bn, n] = state
      if bn == "local":
        sharding = out[bn, 4].client_stats["bn"]["mean"].sharding
        assert len(sharding.device_set) == 4 and sharding.shard_shape((4, 32)) == (1, 32), sharding
      t.assert_trees_close(out[bn, 1].params, out[bn, 4].params, rtol=1e-5, atol=1e-6)
      t.assert_trees_close(out[bn, 1].batch_stats, out[bn, 4].batch_stats, rtol=1e-5, atol=1e-6)
    print("MESH OK")
""")


def test_vmap_and_mesh_clients_agree():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=4").strip())
  result = subprocess.run([sys.executable, "-c", MESH_SCRIPT, __file__], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and "MESH OK" in result.stdout, result.stderr[-3000:]
