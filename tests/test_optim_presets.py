"""Transfer strategies as presets over rules, and the L2-SP penalty."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtransfer import models, optim
from jtransfer.train import config as config_lib


@functools.lru_cache(maxsize=None)
def _resnet_params():
  model = models.create("resnet18", num_classes=10, small_stem=True)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]


def _trainable_tops(rules):
  """Top-level modules with a trainable leaf."""
  labels = optim.label_params(_resnet_params(), rules)
  mask = optim.trainable_mask(labels)
  return sorted(k for k, sub in mask.items() if any(jax.tree.leaves(sub)))


def _phases(strategy, **args):
  return optim.phases(optim.get_freezing_config(strategy, **args), spec=models.get_spec("resnet18"))


def test_single_phase_presets():
  assert _trainable_tops(_phases("linear_probe")[0].param_rules) == ["fc"]
  assert _trainable_tops(_phases("last_stages", k=2)[0].param_rules) == ["fc", "layer3", "layer4"]
  everything = ["bn1", "conv1", "fc", "layer1", "layer2", "layer3", "layer4"]
  assert _trainable_tops(_phases("full_ft")[0].param_rules) == everything
  assert _trainable_tops(_phases("layerwise_decay")[0].param_rules) == everything


def test_last_stage_freezes_the_batchnorms_below_it():
  labels = optim.label_params(_resnet_params(), _phases("last_stages", k=1)[0].param_rules)
  patterns = optim.frozen_bn_patterns(labels, "frozen")
  assert "^bn1$" in patterns and "^layer3/1/downsample_bn$" not in patterns
  assert "^layer3/0/downsample_bn$" in patterns and "^layer3/1/bn2$" in patterns
  assert not any("layer4" in p for p in patterns)
  assert len(patterns) == 1 + 3 * 4 + 2  # Stem, 4 BNs in layer1..3, 2 downsample BNs.


def test_gradual_unfreezing_shrinks_the_frozen_set_at_the_given_steps():
  phases = _phases("gradual_unfreezing", unfreeze_steps=(100, 250))
  assert [p.start_step for p in phases] == [0, 100, 250]
  assert not any(p.restart for p in phases)
  assert [optim.phase_at(phases, s) for s in (0, 99, 100, 249, 250, 10_000)] == [0, 0, 1, 1, 2, 2]
  tops = [_trainable_tops(p.param_rules) for p in phases]
  assert tops == [["fc"], ["fc", "layer4"], ["fc", "layer3", "layer4"]]
  # The head's rule is the same in every phase, so its optimizer state carries over.
  assert len({optim.parse_rules(p.param_rules)[0].label for p in phases}) == 1


def test_lp_ft_is_a_probe_then_a_restarted_full_fine_tune():
  probe, ft = _phases("lp_ft", switch_step=300, ft_lr_mult=0.1)
  assert (probe.start_step, ft.start_step, probe.restart, ft.restart) == (0, 300, False, True)
  assert (probe.schedule_start, ft.schedule_start) == (0, 300)
  assert _trainable_tops(probe.param_rules) == ["fc"]
  assert len(_trainable_tops(ft.param_rules)) == 7
  assert ft.param_rules == ((".*", 0.1),)


def test_custom_rules_and_preset_errors():
  fz = optim.get_freezing_config("custom")
  fz.param_rules = [(r"^fc/", 1.0), (r".*", "frozen")]
  assert optim.phases(fz)[0].param_rules == ((r"^fc/", 1.0), (r".*", "frozen"))
  with pytest.raises(ValueError, match="unfreeze_steps must be increasing"):
    _phases("gradual_unfreezing")
  with pytest.raises(ValueError, match="switch_step > 0"):
    _phases("lp_ft")
  fz.strategy = "probe"
  with pytest.raises(ValueError, match="Unknown freezing strategy 'probe'"):
    optim.phases(fz)


def test_stages_come_from_the_model_family_unless_set():
  config = config_lib.get_base_config()
  config.freezing = optim.get_freezing_config("last_stages", k=1)
  assert optim.stages_and_head(config) == (models.get_spec("resnet18").stages, r"^fc/")
  assert optim.phases(config)[0].param_rules == ((r"^fc/", 1.0), (r"^layer4/", 1.0), (".*", "frozen"))
  config.freezing.stages, config.freezing.head = (r"^a/", r"^b/"), r"^h/"
  assert optim.phases(config)[0].param_rules == ((r"^h/", 1.0), (r"^b/", 1.0), (".*", "frozen"))
  with pytest.raises(ValueError, match="pass the experiment config"):
    optim.phases(optim.get_freezing_config("linear_probe"))


def test_l2sp_is_a_full_fine_tune_with_a_penalty_toward_the_anchor():
  fz = optim.get_freezing_config("l2sp", alpha=0.2, beta_head=0.4)
  assert fz.strategy == "full_ft" and (fz.l2sp_alpha, fz.l2sp_beta_head) == (0.2, 0.4)
  anchor = {"body": {"kernel": jnp.array([1.0, 2.0])}, "fc": {"bias": jnp.array([5.0])}}
  params = {"body": {"kernel": jnp.array([2.0, 2.0])}, "fc": {"bias": jnp.array([3.0])}}
  penalty = optim.l2sp_penalty(params, anchor, alpha=0.2, beta_head=0.4, head_pattern=r"^fc/")
  np.testing.assert_allclose(penalty, 0.1 * 1.0 + 0.2 * 9.0, rtol=1e-6)
  g = jax.grad(optim.l2sp_penalty)(params, anchor, alpha=0.2, beta_head=0.4, head_pattern=r"^fc/")
  np.testing.assert_allclose(g["body"]["kernel"], [0.2, 0.0])  # Toward the anchor, not zero ...
  np.testing.assert_allclose(g["fc"]["bias"], [1.2])            # ... the head toward zero.
  with pytest.raises(ValueError, match="no anchor .* for 'body/kernel'"):
    optim.l2sp_penalty(params, {"fc": anchor["fc"]}, alpha=0.2, beta_head=0.4, head_pattern=r"^fc/")


def test_plain_penalties():
  params = {"fc": {"kernel": jnp.array([3.0, -4.0]), "bias": jnp.array([10.0])}}
  np.testing.assert_allclose(optim.l2_penalty(params, coeff=2.0), 25.0)
  np.testing.assert_allclose(optim.l1_penalty(params, coeff=2.0), 14.0)
