"""DANN pieces: the two-stream source (target without labels) and the adversarial loss."""

import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest
import support as testing

from jtransfer import models
from jtransfer.methods.adapt import dann, domain_head, grl
from jtransfer.methods.adapt import source as streams
from jtransfer.train.inputs import ArraySource


def _arrays(n, seed, shift=0.0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((n, 8, 8, 3)).astype(np.float32) + shift, rng.integers(0, 3, n)


def _images_only(images, batch):
  """A target stream with no labels at all: only 'image' exists."""
  def make(*, seed, start_step, process_index, process_count):
    del process_index, process_count
    rng = np.random.default_rng([seed, start_step])
    while True:
      yield {"image": images[rng.integers(0, len(images), batch)]}
  return make


def _source(adversarial=True):
  labeled = ArraySource(_arrays(32, 0), _arrays(8, 1), batch_size=4, eval_batch_size=4, num_classes=3)
  target_eval = ArraySource(_arrays(8, 2, 1.0), _arrays(6, 3, 1.0), batch_size=4, eval_batch_size=3,
                            num_classes=3)
  target = _images_only(_arrays(16, 4, 1.0)[0], 4)
  return streams.DomainAdaptationSource(labeled, target, target_eval, adversarial=adversarial)


def test_train_batches_carry_target_images_and_lambda_follows_the_step():
  it = _source().train_iterator(seed=0, start_step=0, process_index=0, process_count=1)
  batch = next(it)
  assert set(batch) == {"image", "label", "target_image"}  # no per-example λ array
  assert batch["target_image"].shape == (4, 8, 8, 3)
  lams = [float(grl.lambda_at(step, 10, "paper")) for step in (0, 1, 2, 20)]
  np.testing.assert_allclose(lams, [2 / (1 + np.exp(-10 * p)) - 1 for p in (0, 0.1, 0.2, 1.0)],
                             rtol=1e-6)
  traced = jax.jit(lambda s: grl.lambda_at(s, 10, "paper"))(jnp.int32(2))  # from state.step
  assert float(traced) == pytest.approx(lams[2])
  assert float(grl.lambda_at(7, 10, 0.3)) == pytest.approx(0.3)


def test_eval_is_on_the_target_and_source_only_has_no_target():
  src = _source(adversarial=False)
  b = next(src.train_iterator(seed=0, start_step=0, process_index=0, process_count=1))
  assert set(b) == {"image", "label"}
  ev = list(src.eval_iterator(process_index=0, process_count=1))
  assert sum(e["mask"].sum() for e in ev) == 6 and src.info.num_eval == 6


def test_label_sets_must_match():
  labeled = ArraySource(_arrays(8, 0), _arrays(8, 1), batch_size=4, eval_batch_size=4, num_classes=3)
  other = ArraySource(_arrays(8, 0), _arrays(8, 1), batch_size=4, eval_batch_size=4, num_classes=5)
  with pytest.raises(ValueError, match="same label set"):
    streams.DomainAdaptationSource(labeled, _images_only(_arrays(8, 0)[0], 4), other)


def test_domain_gradient_reaches_the_backbone_reversed():
  model = models.create("resnet18", num_classes=3, small_stem=True, base_planes=4)
  head = domain_head.DomainHead((8,))
  batch = next(_source().train_iterator(seed=0, start_step=0, process_index=0, process_count=1))
  v = model.init(testing.init_key(), batch["image"])
  params = {**v["params"], "domain_head": head.init(jax.random.key(1), jnp.zeros((1, 32)))["params"]}
  loss_cfg = config_dict.ConfigDict({"label_smoothing": 0.0})

  @jax.jit
  def grads(lam, weight):
    fn = dann.make_loss_fn(model, head, loss_cfg, lam=lam, domain_weight=weight)
    return jax.grad(lambda p: fn(p, v["batch_stats"], batch, jax.random.key(1))[0])(params)

  ce_only = grads(1.0, 0.0)
  domain_rev = jax.tree.map(jnp.subtract, grads(1.0, 1.0), ce_only)    # domain part, λ = 1
  domain_plain = jax.tree.map(jnp.subtract, grads(-1.0, 1.0), ce_only)  # λ = -1: no reversal
  k_rev = domain_rev["layer4"]["1"]["conv2"]["kernel"]
  k_plain = domain_plain["layer4"]["1"]["conv2"]["kernel"]
  assert float(jnp.abs(k_plain).max()) > 0
  np.testing.assert_allclose(k_rev, -k_plain, rtol=1e-4, atol=1e-7)
  # The domain classifier itself is trained normally (same sign either way).
  np.testing.assert_allclose(domain_rev["domain_head"]["out"]["kernel"],
                             domain_plain["domain_head"]["out"]["kernel"], rtol=1e-4, atol=1e-7)
