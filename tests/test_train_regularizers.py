"""Regularizers of the one trainer, each checked against its definition: L2 (coeff/2·Σw², gradient
coeff·w), L1 (coeff·Σ|w|, gradient coeff·sign(w)), L2 penalty ≠ decoupled weight decay, label
smoothing, dropout before the head."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtransfer import optim
from jtransfer.train import config as config_lib
from jtransfer.train import losses, parallel, trainer
from jtransfer.train.state import TrainState
from jtransfer.train.task import Task


class _Toy(nn.Module):
  """body (Dense) → BatchNorm → fc, returning (logits, features) like the ResNets."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(6, name="body")(x.reshape(x.shape[0], -1))
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
    return nn.Dense(3, name="fc")(x), {"pre_logits": x}


def _setup(**loss):
  config = config_lib.get_base_config()
  for k, v in loss.items():
    config.loss[k] = v
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(8, 2, 2, 3)).astype(np.float32),
           "label": rng.integers(0, 3, 8).astype(np.int32)}
  variables = _Toy().init(jax.random.key(0), batch["image"])
  params = jax.tree.map(lambda w: w + 0.3 * jax.random.normal(jax.random.key(1), w.shape),
                        variables["params"])  # nonzero biases, so "kernels only" is visible
  return config, batch, params, variables["batch_stats"]


def _value_and_grad(loss_cfg, params, stats, batch, trainable=None):
  fn = losses.make_loss_fn(_Toy(), loss_cfg, trainable=trainable)
  f = jax.jit(jax.value_and_grad(lambda p: fn(p, stats, batch, jax.random.key(0)), has_aux=True))
  (loss, (_, metrics)), g = f(params)
  return float(loss), metrics, g


def _kernels(tree):
  return {k: v["kernel"] for k, v in tree.items() if k != "bn"}


def test_l2_adds_half_coeff_sum_of_squared_kernels_with_gradient_coeff_w():
  coeff = 0.3
  config, batch, params, stats = _setup()
  base, _, g0 = _value_and_grad(config.loss, params, stats, batch)
  config.loss.l2 = coeff
  loss, metrics, g = _value_and_grad(config.loss, params, stats, batch)
  expected = coeff / 2 * sum(float(jnp.sum(w ** 2)) for w in _kernels(params).values())
  assert loss - base == pytest.approx(expected, rel=1e-5)
  assert float(metrics["l2"]) == pytest.approx(expected, rel=1e-6)
  diff = jax.tree.map(jnp.subtract, g, g0)
  for name in ("body", "fc"):
    np.testing.assert_allclose(diff[name]["kernel"], coeff * params[name]["kernel"], atol=1e-6)
    np.testing.assert_allclose(diff[name]["bias"], 0.0, atol=1e-6)  # kernels only (default)
  np.testing.assert_allclose(diff["bn"]["scale"], 0.0, atol=1e-6)


def test_l1_adds_coeff_sum_of_abs_kernels_with_gradient_coeff_sign_w():
  coeff = 0.05
  config, batch, params, stats = _setup()
  base, _, g0 = _value_and_grad(config.loss, params, stats, batch)
  config.loss.l1 = coeff
  loss, metrics, g = _value_and_grad(config.loss, params, stats, batch)
  expected = coeff * sum(float(jnp.sum(jnp.abs(w))) for w in _kernels(params).values())
  assert loss - base == pytest.approx(expected, rel=1e-5)
  assert float(metrics["l1"]) == pytest.approx(expected, rel=1e-6)
  diff = jax.tree.map(jnp.subtract, g, g0)
  for name in ("body", "fc"):
    np.testing.assert_allclose(diff[name]["kernel"], coeff * np.sign(params[name]["kernel"]),
                               atol=1e-6)
    np.testing.assert_allclose(diff[name]["bias"], 0.0, atol=1e-6)


def test_penalties_cover_only_trainable_leaves_matching_the_pattern():
  config, batch, params, stats = _setup(l2=1.0, l1=0.1)
  trainable = jax.tree.map(lambda _: True, params)
  trainable["body"] = {"kernel": False, "bias": False}  # a frozen layer adds no constant
  terms = losses.penalties(params, config.loss, trainable=trainable)
  fc = params["fc"]["kernel"]
  assert float(terms["l2"]) == pytest.approx(0.5 * float(jnp.sum(fc ** 2)), rel=1e-6)
  assert float(terms["l1"]) == pytest.approx(0.1 * float(jnp.sum(jnp.abs(fc))), rel=1e-6)
  config.loss.penalty_pattern = r"^fc/"  # kernel and bias of the head
  terms = losses.penalties(params, config.loss)
  head = float(jnp.sum(fc ** 2) + jnp.sum(params["fc"]["bias"] ** 2))
  assert float(terms["l2"]) == pytest.approx(0.5 * head, rel=1e-6)
  config.loss.l1 = config.loss.l2 = 0.0
  assert not losses.penalties(params, config.loss)  # off: no term, no metric


def _one_update(config, params, stats, batch):
  """One step of trainer.make_train_step (the trainer's wiring of config.loss and config.optim)."""
  rules = [(".*", 1.0)]
  # As trainer.Phases builds it: the step multiplies the updates by optim.lr.
  tx = optim.build_optimizer(config.optim, rules, params, total_steps=10, lr_input=True)
  mask = optim.trainable_mask(optim.label_params(params, rules))
  par = parallel.create("jit")
  step = trainer.make_train_step(config, _Toy(), tx, mask, par)
  state = par.put_state(TrainState.create(params=params, batch_stats=stats, tx=tx))
  extra = par.put_extra(trainer.extra_inputs(config, Task(config), {"params": params}))
  new, metrics = step(state, par.put_batch(batch), extra)
  return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, params), metrics


def test_l2_penalty_under_adam_is_not_decoupled_weight_decay():
  """First Adam step: the L2 penalty's update is −lr·(g+cw)/(|g+cw|+ε) (rescaled with the
  gradient), adamw's decoupled decay −lr·(g/(|g|+ε) + c·w) (added after the rescaling)."""
  lr, c, eps = 0.01, 0.5, 1e-8
  config, batch, params, stats = _setup()
  config.optim.lr, config.optim.schedule, config.optim.eps = lr, "constant", eps
  _, _, g = _value_and_grad(config.loss, params, stats, batch)
  kernel = lambda t: np.asarray(t["fc"]["kernel"])
  w, gk = kernel(params), kernel(g)

  config.optim.name, config.optim.weight_decay, config.loss.l2 = "adam", 0.0, c
  u_l2, metrics = _one_update(config, params, stats, batch)
  assert float(metrics["l2"]) > 0
  config.optim.name, config.optim.weight_decay, config.loss.l2 = "adamw", c, 0.0
  u_wd, metrics = _one_update(config, params, stats, batch)
  assert "l2" not in metrics

  np.testing.assert_allclose(kernel(u_l2), -lr * (gk + c * w) / (np.abs(gk + c * w) + eps),
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(kernel(u_wd), -lr * (gk / (np.abs(gk) + eps) + c * w),
                             rtol=1e-4, atol=1e-7)
  assert np.abs(kernel(u_l2) - kernel(u_wd)).max() > 1e-3


def test_label_smoothing_is_the_hand_computed_smoothed_cross_entropy():
  eps, k = 0.2, 3
  config, batch, params, stats = _setup(label_smoothing=eps)
  loss, metrics, _ = _value_and_grad(config.loss, params, stats, batch)
  logits, _ = _Toy().apply({"params": params, "batch_stats": stats}, batch["image"], train=True,
                           mutable=["batch_stats"])[0]
  logp = np.asarray(jax.nn.log_softmax(logits))
  targets = (1 - eps) * np.eye(k)[batch["label"]] + eps / k
  expected = float(np.mean(-(targets * logp).sum(-1)))
  assert loss == pytest.approx(expected, rel=1e-5)
  assert float(metrics["ce"]) == pytest.approx(expected, rel=1e-5)
  plain = float(np.mean(-logp[np.arange(8), batch["label"]]))
  assert abs(loss - plain) > 1e-3


def test_dropout_before_the_head_depends_on_the_key_in_training_only():
  config = config_lib.get_base_config()
  config.model.small_stem, config.model.base_planes = True, 4
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)

  config.model.dropout_rate = 0.5
  dropout = trainer.build_model(config.model, 5)
  variables, _ = trainer.init_variables(dropout, config.model, x.shape[1:], 0)  # rbg: fast init
  config.model.dropout_rate = 0.0
  none = trainer.build_model(config.model, 5)

  def logits(model, train, key):
    out = model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(key)},
                      mutable=["batch_stats"] if train else False)
    return np.asarray(out[0][0] if train else out[0])

  assert np.abs(logits(dropout, True, 1) - logits(dropout, True, 2)).max() > 1e-4
  np.testing.assert_array_equal(logits(dropout, False, 1), logits(dropout, False, 2))
  np.testing.assert_array_equal(logits(none, True, 1), logits(none, True, 2))


@pytest.mark.parametrize("field, value", [("l1", -0.1), ("l2", -1.0), ("penalty_pattern", "(")])
def test_bad_penalty_field_is_a_clear_error(field, value):
  config = config_lib.get_base_config()
  config.loss[field] = value
  with pytest.raises(ValueError, match=f"loss.{field}"):
    config_lib.validate(config)
