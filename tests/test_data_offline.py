"""The offline TFDS builders (no network) and the message for unprepared datasets."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jtransfer import data


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  # One prepared copy for every test module of the session (get_builder reuses it).
  return str(tmp_path_factory.getbasetemp() / 'tfds')


def _arrays(builder, split):
  ds = builder.as_dataset(split=split, shuffle_files=False)
  batch = next(iter(tfds.as_numpy(ds.batch(10_000))))
  return batch['image'], batch['label']


@pytest.mark.parametrize('name,shape,vmax,train,test', [
    ('uci_digits', (8, 8, 1), 16, 1347, 450),
    ('mnist5k', (28, 28, 1), 255, 4000, 1000),
])
def test_offline_builder(data_dir, name, shape, vmax, train, test):
  builder = data.get_builder(name, data_dir)
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == train
  assert builder.info.splits['test'].num_examples == test
  images, labels = _arrays(builder, 'train')
  test_images, test_labels = _arrays(builder, 'test')
  assert images.shape == (train,) + shape and images.max() == vmax
  assert set(np.unique(labels)) == set(range(10)) == set(np.unique(test_labels))
  if name == 'mnist5k':  # Stratified: 400 / 100 per class.
    assert (np.bincount(labels) == 400).all() and (np.bincount(test_labels) == 100).all()
  # Train and test are disjoint (no image of test appears in train).
  train_rows = {im.tobytes() for im in images}
  overlap = sum(im.tobytes() in train_rows for im in test_images)
  assert overlap <= 2  # A couple of digits collide pixel for pixel in the source data.


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  cfg = data.get_config()
  cfg.dataset, cfg.data_dir = 'mnist', str(tmp_path)
  with pytest.raises(FileNotFoundError, match=r'(?s)tfds build mnist --data_dir=.*manual'):
    data.dataset_info(cfg)


def test_unknown_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="Unknown dataset 'no_such_set'"):
    data.get_builder('no_such_set', str(tmp_path))
