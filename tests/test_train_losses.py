"""Losses: label smoothing, distillation (formula, teacher never differentiated), L2-SP wiring."""

import flax.linen as nn
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest

from jtransfer import models
from jtransfer.train import config as config_lib
from jtransfer.train import losses


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_cross_entropy_with_label_smoothing_and_soft_labels():
  rng = np.random.default_rng(0)
  logits, labels = rng.normal(size=(6, 5)).astype(np.float32), rng.integers(0, 5, 6)
  targets = np.eye(5)[labels] * 0.9 + 0.1 / 5
  expected = -(targets * _np_log_softmax(logits)).sum(-1)
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=0.1)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  soft = rng.dirichlet(np.ones(5), 6).astype(np.float32)
  got = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), soft_labels=soft)
  np.testing.assert_allclose(got, -(soft * _np_log_softmax(logits)).sum(-1), rtol=1e-5)


def test_distillation_is_hinton_alpha_ce_plus_t2_kl():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(2, 8, 4)).astype(np.float32)
  y = rng.integers(0, 4, 8)
  alpha, temp = 0.3, 3.0
  pt = np.exp(_np_log_softmax(t / temp))
  kl = (pt * (_np_log_softmax(t / temp) - _np_log_softmax(s / temp))).sum(-1).mean()
  ce = -_np_log_softmax(s)[np.arange(8), y].mean()
  loss, aux = losses.distillation_loss(s, t, y, alpha=alpha, temperature=temp)
  np.testing.assert_allclose(loss, alpha * ce + (1 - alpha) * temp ** 2 * kl, rtol=1e-5)
  np.testing.assert_allclose(aux["distill_kl"], kl, rtol=1e-5)
  assert float(losses.distillation_kl(s, s, temperature=temp).max()) == pytest.approx(0, abs=1e-6)


def _count_convs(jaxpr) -> int:
  """Convolutions in a jaxpr, nested ones (pjit, custom_vjp, scan) included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  return sum((eqn.primitive.name == "conv_general_dilated")
             + sum(_count_convs(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
             for eqn in jaxpr.eqns)


def test_teacher_forward_is_never_differentiated():
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((2,), jnp.int32)
  student = models.create("resnet18", num_classes=3, small_stem=True, base_planes=8)
  teacher = models.create("resnet34", num_classes=3, small_stem=True, base_planes=8)
  sv = jax.eval_shape(student.init, jax.random.key(0), x)
  tv = jax.eval_shape(teacher.init, jax.random.key(1), x)
  cfg = config_lib.get_loss_config()

  def grad_convs(with_teacher):
    def g(params, stats, tvars, images, labels):
      teach = (teacher, tvars) if with_teacher else None
      loss_fn = losses.make_loss_fn(student, cfg, teacher=teach)
      return jax.grad(lambda p: loss_fn(p, stats, {"image": images, "label": labels},
                                        jax.random.key(2))[0])(params)
    return _count_convs(jax.make_jaxpr(g)(sv["params"], sv["batch_stats"], tv, x, y))

  plain, with_teacher = grad_convs(False), grad_convs(True)
  teacher_fwd = _count_convs(jax.make_jaxpr(lambda v, im: teacher.apply(v, im))(tv, x))
  assert teacher_fwd == 36  # resnet34: stem + 16 blocks x 2 + 3 projections
  assert with_teacher == plain + teacher_fwd  # the teacher adds its forward convolutions only


class _Tiny(nn.Module):
  """(logits, features) like the ResNets, with a BatchNorm: enough to test the wiring, fast."""

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.BatchNorm(use_running_average=not train)(x.reshape(len(x), -1))
    return nn.Dense(3, name="fc")(h), {"pre_logits": h}


def test_l2sp_and_metrics_from_the_loss_fn():
  x = jnp.ones((2, 4))
  model = _Tiny()
  v = model.init(jax.random.key(0), x)
  cfg = config_dict.ConfigDict({"label_smoothing": 0.0})
  penalty = lambda p: 0.5 * jnp.sum(p["fc"]["bias"] ** 2) + 1.0
  loss_fn = losses.make_loss_fn(model, cfg, l2sp=penalty)
  batch = {"image": x, "label": jnp.array([0, 1])}
  loss, (stats, m) = loss_fn(v["params"], v["batch_stats"], batch, jax.random.key(1))
  assert set(m) == {"ce", "l2sp", "top1"}
  np.testing.assert_allclose(loss, m["ce"] + 1.0, rtol=1e-6)
  assert jax.tree.structure(stats) == jax.tree.structure(v["batch_stats"])
