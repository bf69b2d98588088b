"""The ResNet family: torchvision's parameter counts, feature outputs and options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import support as testing

from jtransfer import models

# torchvision's parameter counts (1000-class head), pinned: a drift here is a bug in the model.
PARAM_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_every_arch_has_a_pinned_count():
  """Every registered family pins its parameter counts (this file: ResNets)."""
  import test_efficientnet_lite  # pylint: disable=g-import-not-at-top  (tests/ is on sys.path)
  assert set(PARAM_COUNTS) == set(models.FAMILIES["resnet"].archs)
  pinned = set(PARAM_COUNTS) | set(test_efficientnet_lite.PARAM_COUNTS)
  assert pinned == set(models.ARCHS)


@pytest.mark.parametrize("arch", sorted(PARAM_COUNTS))
def test_param_count_equals_torchvision(arch):
  model = models.create(arch, num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert _count(shapes["params"]) == PARAM_COUNTS[arch]


def test_feature_extractor_and_small_stem_shapes():
  model = models.create("resnet18", num_classes=None, small_stem=True)
  x = jnp.zeros((2, 32, 32, 3))
  variables = model.init(testing.init_key(), x)
  assert "fc" not in variables["params"]
  logits, feats = model.apply(variables, x)
  assert logits is None
  assert {k: v.shape for k, v in feats.items()} == {
      "stem": (2, 32, 32, 64), "layer1": (2, 32, 32, 64), "layer2": (2, 16, 16, 128),
      "layer3": (2, 8, 8, 256), "layer4": (2, 4, 4, 512), "pre_logits": (2, 512)}


def test_bfloat16_compute_keeps_float32_params():
  model = models.create("resnet18", num_classes=5, small_stem=True, dtype="bfloat16")
  x = jnp.ones((2, 16, 16, 3))
  variables = model.init(testing.init_key(), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(variables))
  logits, feats = model.apply(variables, x)
  assert feats["layer1"].dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32 and logits.shape == (2, 5)


def test_frozen_bn_uses_running_stats_in_training():
  x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  model = models.create("resnet18", num_classes=3, small_stem=True, frozen_bn=(r"^(bn1|layer[12])",))
  variables = model.init(testing.init_key(), x)
  _, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
  old, upd = variables["batch_stats"], new["batch_stats"]
  for name in ("bn1",):
    np.testing.assert_array_equal(old[name]["mean"], upd[name]["mean"])
  np.testing.assert_array_equal(old["layer2"]["1"]["bn2"]["var"], upd["layer2"]["1"]["bn2"]["var"])
  assert not np.array_equal(old["layer3"]["0"]["bn1"]["mean"], upd["layer3"]["0"]["bn1"]["mean"])


def test_momentum_and_epsilon_are_torchvision_s():
  from jtransfer.models import resnet
  # torchvision: momentum=0.1 (new = 0.9 old + 0.1 batch), eps=1e-5.
  assert resnet.BN_MOMENTUM == 0.9 and resnet.BN_EPSILON == 1e-5


def test_unknown_arch_is_a_clear_error():
  with pytest.raises(ValueError, match="resnet19"):
    models.create("resnet19")


def test_narrow_resnet_for_cpu_demos():
  model = models.create("resnet18", num_classes=10, small_stem=True, base_planes=16)
  x = jnp.zeros((1, 16, 16, 3))
  variables = model.init(testing.init_key(), x)
  assert variables["params"]["layer4"]["0"]["conv1"]["kernel"].shape == (3, 3, 64, 128)
  logits, feats = model.apply(variables, x)
  assert feats["pre_logits"].shape == (1, 128) and logits.shape == (1, 10)
