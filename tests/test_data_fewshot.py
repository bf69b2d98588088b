"""Few-shot (examples per class) and VTAB-1k selections."""
import itertools

import numpy as np
import pytest

from jtransfer import data
from jtransfer.data import fewshot


def test_sample_per_class_is_deterministic_and_balanced():
  labels = np.repeat(np.arange(5), 30)[np.random.default_rng(0).permutation(150)]
  a = data.sample_per_class(labels, shots=4, seed=7)
  b = data.sample_per_class(labels, shots=4, seed=7)
  np.testing.assert_array_equal(a, b)
  assert (np.bincount(labels[a]) == 4).all() and len(set(a)) == 20
  assert not np.array_equal(a, data.sample_per_class(labels, shots=4, seed=8))
  assert (np.diff(a) > 0).all()  # Sorted: positions in the split's order.


def test_class_draw_does_not_depend_on_other_classes():
  labels = np.repeat(np.arange(3), 10)
  a = data.sample_per_class(labels, shots=2, seed=0)
  b = data.sample_per_class(labels[:20], shots=2, seed=0)  # Class 2 removed.
  np.testing.assert_array_equal(a[:4], b)


def test_too_few_examples_names_the_class():
  with pytest.raises(ValueError, match='class 1 has 2 examples, fewer than shots=3'):
    data.sample_per_class(np.array([0, 0, 0, 1, 1]), shots=3, seed=0)


def test_vtab1k_parts():
  assert list(fewshot.vtab1k_indices(1500, 'val200')[[0, -1]]) == [800, 999]
  with pytest.raises(ValueError, match='needs 1000'):
    fewshot.vtab1k_indices(900, 'train800val200')


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  cfg = data.get_config()
  cfg.data_dir = str(tmp_path_factory.getbasetemp() / 'tfds')  # Shared with other modules.
  cfg.eval_batch_size = 100
  return cfg


def test_shots_on_a_tfds_dataset(cfg):
  c = cfg.copy_and_resolve_references()
  c.shots, c.batch_size = 3, 10
  info = data.dataset_info(c)
  assert info.num_train == 30 and info.num_eval == 450
  epochs = list(itertools.islice(data.train_iterator(c, seed=0), 6))  # Two epochs.
  for epoch in (epochs[:3], epochs[3:]):
    assert (np.bincount(np.concatenate([b['label'] for b in epoch])) == 3).all()
  again = list(itertools.islice(data.train_iterator(c, seed=0), 3))
  np.testing.assert_array_equal(again[1]['image'], epochs[1]['image'])
  # Two processes split the 30 shots 15 / 15.
  parts = [next(data.train_iterator(c, seed=0, process_index=p, process_count=2))
           for p in (0, 1)]
  assert parts[0]['label'].shape == (5,)


def test_vtab1k_on_a_tfds_dataset(cfg):
  c = cfg.copy_and_resolve_references()
  c.vtab1k = True
  assert data.dataset_info(c).num_train == 800
  val = list(data.eval_iterator(c, 'val200'))
  assert sum(int(b['mask'].sum()) for b in val) == 200
  train800 = list(data.eval_iterator(c, 'train800'))
  rows = {im.tobytes() for b in train800 for im in b['image'][b['mask']]}
  val_rows = [im.tobytes() for b in val for im in b['image'][b['mask']]]
  assert sum(r in rows for r in val_rows) <= 1  # Disjoint up to duplicate digits.
