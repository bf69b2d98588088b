"""train/fields.py: every base-config field has a role, and identity and program keys follow it."""

import json

from ml_collections import config_dict
import pytest

from jtransfer import workdir
from jtransfer.benchmark import cost
from jtransfer.train import config as config_lib
from jtransfer.train import fields, programs


def _base_tree() -> dict:
  return json.loads(config_lib.get_base_config().to_json_best_effort(sort_keys=True))


def _set(tree: dict, dotted: str, value) -> dict:
  out = json.loads(json.dumps(tree))
  node = out
  *parents, leaf = dotted.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  return out


def _other(value):
  """A value of the same kind that differs from ``value``."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1
  if isinstance(value, str):
    return value + "x"
  if isinstance(value, list):
    return value + ["x"]
  return "x"  # None


def test_every_base_config_field_has_a_role():
  assert fields.unclassified(_base_tree()) == []
  assert set(fields.ROLES.values()) <= set(fields.ROLE_NAMES)


def test_every_table_entry_names_a_base_config_field():
  keys = list(fields.flatten(_base_tree()))
  for entry in fields.ROLES:
    assert any(k == entry or k.startswith(entry + ".") for k in keys), entry


@pytest.mark.parametrize("key", sorted(fields.flatten(_base_tree())))
def test_identity_and_program_keys_follow_the_role(key):
  """Changing one field changes a workdir's identity iff its role is result or input, and the
  shared-program key iff it is result or execution: the roles are the only list."""
  base = _base_tree()
  changed = _set(base, key, _other(fields.flatten(base)[key]))
  identity_changed = workdir.fingerprint(changed)[0] != workdir.fingerprint(base)[0]
  program_changed = (programs.config_key(config_dict.ConfigDict(changed))
                     != programs.config_key(config_dict.ConfigDict(base)))
  role = fields.role(key)
  # train.num_steps is compared on its own (it may grow with train.allow_extend).
  assert identity_changed == (role in (fields.RESULT, fields.INPUT) and key != "train.num_steps")
  assert program_changed == (role in (fields.RESULT, fields.EXECUTION))


def test_model_family_options_take_their_family_role():
  assert fields.role("model.conv_impl") == fields.EXECUTION
  assert fields.role("model.depthwise_impl") == fields.EXECUTION
  assert fields.role("model.small_stem") == fields.RESULT
  assert fields.role("model.not_an_option") == fields.RESULT  # unknown: conservative


def test_a_run_resumes_under_another_conv_impl_but_not_another_arch(tmp_path):
  config = config_lib.get_base_config()
  config.model.conv_impl = "onednn"
  workdir.write_identity(tmp_path, config)
  config.model.conv_impl = "xla"
  workdir.check_identity(tmp_path, config)  # the same run, another formulation
  config.model.arch = "resnet34"
  with pytest.raises(workdir.WorkdirMismatchError, match="model.arch"):
    workdir.check_identity(tmp_path, config)


def test_an_identity_recorded_before_a_reclassification_still_resumes(tmp_path):
  """identity.json of an older version counted model.conv_impl; today's roles do not."""
  config = config_lib.get_base_config()
  record = workdir.write_identity(tmp_path, config)
  record["fields"]["model.conv_impl"] = "onednn"
  (tmp_path / workdir.IDENTITY_FILE).write_text(json.dumps(record))
  workdir.check_identity(tmp_path, config)


def test_the_cost_key_ignores_run_inputs_but_not_the_dataset():
  config = config_lib.get_base_config()
  before = cost.program_key(config)
  for key, value in (("train.seed", 3), ("optim.lr", 0.5), ("data.shots", 5),
                     ("model.init", "/w"), ("train.log_every", 7)):
    config.update_from_flattened_dict({key: value})
  assert cost.program_key(config) == before
  config.data.dataset = "mnist5k"
  assert cost.program_key(config) != before
