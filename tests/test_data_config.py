"""The data config: defaults, locking, validation when the config is read."""
import pytest

from jtransfer import data


def test_defaults_validate_and_are_locked():
  cfg = data.get_config()
  data.validate_config(cfg)
  assert cfg.dataset == 'uci_digits' and cfg.image_size == 32 and cfg.shots is None
  assert set(cfg.keys()) >= {
      'dataset', 'data_dir', 'train_split', 'eval_split', 'image_size', 'pp_train',
      'pp_eval', 'shots', 'fewshot_seed', 'vtab1k', 'batch_size', 'eval_batch_size',
      'shuffle_buffer', 'skip_corrupt', 'cache', 'mixup_alpha'}
  with pytest.raises(AttributeError):
    cfg.batchsize = 3  # A typo is an error, not a new field.


def test_default_pp_follows_dataset():
  cfg = data.get_config()
  digits = data.resolve_pp(cfg, train=False)
  assert digits[-1] == {'op': 'normalize', 'in_max': 16.0}
  cfg.dataset = 'mnist5k'
  assert data.resolve_pp(cfg, train=False)[-1] == {'op': 'normalize', 'in_max': 255.0}
  cfg.pp_eval = ['decode']
  assert data.resolve_pp(cfg, train=False) == ['decode']


@pytest.mark.parametrize('field,value,match', [
    ('pp_train', ['decode', 'rezise'], r"data.pp_train\[1\]: unknown op 'rezise'"),
    ('pp_eval', [{'op': 'resize', 'size': 0}], r'data.pp_eval\[0\] \(resize\)'),
    ('batch_size', 0, r'data.batch_size must be a positive int'),
    ('shots', 0, r'data.shots must be a positive int'),
    ('dataset', 'folder:', r"folder:/path/to/root"),
    ('train_split', 'val200', r'set data.vtab1k=True'),
    ('mixup_alpha', -1.0, r'data.mixup_alpha'),
])
def test_bad_values_name_the_field(field, value, match):
  cfg = data.get_config()
  cfg[field] = value
  with pytest.raises(ValueError, match=match):
    data.validate_config(cfg)


def test_vtab1k_and_shots_exclude_each_other():
  cfg = data.get_config()
  cfg.vtab1k, cfg.shots = True, 5
  with pytest.raises(ValueError, match='only one'):
    data.validate_config(cfg)
