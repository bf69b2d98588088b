"""Labelling parameters from rules, on tiny two-leaf trees, and the errors for bad rules/configs."""

import re

import jax.numpy as jnp
import pytest

from jtransfer import optim

TREE = {"backbone": {"kernel": jnp.ones((2, 2))}, "head": {"bias": jnp.zeros((2,))}}


def test_first_matching_rule_wins():
  labels = optim.label_params(TREE, [(r"^head/", 2.0), (r".*", "frozen")])
  assert labels == {"backbone": {"kernel": "frozen"}, "head": {"bias": "^head/ lr×2"}}
  assert optim.trainable_mask(labels) == {"backbone": {"kernel": False}, "head": {"bias": True}}


def test_dict_rule_and_label_carries_schedule_overrides():
  rules = [(r"^head/", dict(lr_mult=0.5, schedule=dict(warmup_steps=3))), (r".*", 1.0)]
  labels = optim.label_params(TREE, rules)
  assert labels["head"]["bias"] == "^head/ lr×0.5 warmup_steps=3"
  assert labels["backbone"]["kernel"] == ".* lr×1"


def test_unmatched_parameters_are_listed():
  with pytest.raises(ValueError, match=re.escape("1 parameter(s) match no rule: backbone/kernel")):
    optim.label_params(TREE, [(r"^head/", 1.0)])


def test_rule_matching_nothing_is_an_error():
  with pytest.raises(ValueError, match=r"Rule 1 \('\^neck/'\) matches no parameter"):
    optim.label_params(TREE, [(r"^head/", 1.0), (r"^neck/", "frozen"), (r".*", 1.0)])


def test_shadowed_rule_is_an_error():
  with pytest.raises(ValueError, match="Rule 1 .* earlier rules already claimed"):
    optim.label_params(TREE, [(r".*", "frozen"), (r"^head/", 1.0)])


@pytest.mark.parametrize("rule, message", [
    ("freeze", "unknown rule 'freeze'"),
    (-1.0, "multiplier must be a number >= 0"),
    (True, "multiplier must be a number >= 0"),
    (dict(lr=1.0), r"unknown keys \['lr'\]"),
    (dict(schedule=dict(warmup=3)), r"\['warmup'\] are not schedule fields"),
])
def test_bad_rule_values(rule, message):
  with pytest.raises(ValueError, match=message):
    optim.label_params(TREE, [(r".*", rule)])


def test_bad_regex_and_empty_rules():
  with pytest.raises(ValueError, match="invalid regex"):
    optim.label_params(TREE, [(r"(", 1.0)])
  with pytest.raises(ValueError, match="No parameter rules"):
    optim.label_params(TREE, [])


def test_frozen_bn_patterns_picks_batchnorms_whose_params_are_all_frozen():
  labels = {"bn1": {"scale": "frozen", "bias": "frozen"},
            "conv1": {"kernel": "frozen"},
            "layer1": {"0": {"bn1": {"scale": "frozen", "bias": "x"}}},
            "layer2": {"0": {"bn2": {"scale": "frozen", "bias": "frozen"}}}}
  assert optim.frozen_bn_patterns(labels, "frozen") == ("^bn1$", "^layer2/0/bn2$")
  assert optim.frozen_bn_patterns(labels, "adapt") == ()
  assert optim.frozen_bn_patterns(labels, "running") == ("^bn1$", "^layer1/0/bn1$", "^layer2/0/bn2$")
  with pytest.raises(ValueError, match="Unknown bn_mode"):
    optim.frozen_bn_patterns(labels, "train")


def test_configs_are_lockable_and_reject_typos():
  cfg = optim.get_config()
  cfg.lock()
  with pytest.raises(AttributeError):
    cfg.weight_decy = 0.1  # Typo.
  cfg.clip_norm = 1.0  # A placeholder takes its type.
  fz = optim.get_freezing_config("last_stages", k=2)
  fz.lock()
  assert fz.strategy_args.k == 2 and fz.strategy_args.head_lr_mult == 1.0
  with pytest.raises(AttributeError):
    fz.strategy_args.kk = 3


def test_freezing_config_errors():
  with pytest.raises(ValueError, match="Unknown freezing strategy 'probe'"):
    optim.get_freezing_config("probe")
  with pytest.raises(ValueError, match="unknown \\['kk'\\]"):
    optim.get_freezing_config("last_stages", kk=2)
