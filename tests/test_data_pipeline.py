"""Train/eval pipelines on the real (offline) uci_digits: per-process parts, padding,
resumable determinism, global arrays."""
import itertools

import jax
import numpy as np
import pytest

from jtransfer import data


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
  cfg = data.get_config()
  cfg.data_dir = str(tmp_path_factory.getbasetemp() / 'tfds')  # Shared with other modules.
  cfg.batch_size = 64
  cfg.eval_batch_size = 40
  return cfg


def _rows(batches):
  """The real (mask=True) examples as sorted (label, image bytes) rows."""
  rows = []
  for b in batches:
    for image, label in zip(b['image'][b['mask']], b['label'][b['mask']]):
      rows.append((int(label), image.tobytes()))
  return sorted(rows)


def test_eval_processes_cover_every_example_once(cfg):
  single = list(data.eval_iterator(cfg, process_index=0, process_count=1))
  parts = [list(data.eval_iterator(cfg, process_index=p, process_count=2)) for p in (0, 1)]
  assert len(parts[0]) == len(parts[1])  # Processes step together.
  assert _rows(parts[0] + parts[1]) == _rows(single)
  assert len(_rows(single)) == 450


def test_eval_padding_and_mask_counts(cfg):
  # 450 examples, 4 processes: parts of 113, 113, 112, 112; local batch 10 -> 12 batches.
  for p, real in enumerate([113, 113, 112, 112]):
    batches = list(data.eval_iterator(cfg, process_index=p, process_count=4))
    assert len(batches) == 12
    assert all(b['image'].shape == (10, 32, 32, 3) for b in batches)
    mask = np.concatenate([b['mask'] for b in batches])
    assert mask.sum() == real and not mask[real:].any()
    labels = np.concatenate([b['label'] for b in batches])
    assert (labels[~mask] == 0).all()
    assert batches[0]['image'].dtype == np.float32 and batches[0]['label'].dtype == np.int32


def test_train_batches_shapes_and_types(cfg):
  batch = next(data.train_iterator(cfg, seed=0, process_index=1, process_count=2))
  assert batch['image'].shape == (32, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (32,) and batch['label'].dtype == np.int32
  assert set(batch) == {'image', 'label'}


def test_train_resume_sees_the_same_batches(cfg):
  # 1,347 examples / 64 per batch: steps 20..22 cross the first epoch boundary.
  full = list(itertools.islice(data.train_iterator(cfg, seed=3), 23))
  resumed = list(itertools.islice(data.train_iterator(cfg, seed=3, start_step=20), 3))
  for a, b in zip(full[20:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  other = next(data.train_iterator(cfg, seed=4))
  assert not np.array_equal(other['label'], full[0]['label'])


def test_train_epoch_visits_every_example_once(cfg):
  c = cfg.copy_and_resolve_references()
  c.pp_train = list(data.resolve_pp(c, train=False))  # No augmentation: rows comparable.
  c.batch_size = 449  # 3 batches = one epoch of the 1,347 train examples.
  epoch = list(itertools.islice(data.train_iterator(c, seed=0), 3))
  labels = np.concatenate([b['label'] for b in epoch])
  reference = [b for b in data.eval_iterator(c, 'train')]
  ref_labels = np.concatenate([b['label'][b['mask']] for b in reference])
  np.testing.assert_array_equal(np.bincount(labels), np.bincount(ref_labels))
  rows = sorted(im.tobytes() for b in epoch for im in b['image'])
  assert rows == sorted(im.tobytes() for b in reference for im in b['image'][b['mask']])


def test_mixup_adds_soft_labels(cfg):
  c = cfg.copy_and_resolve_references()
  c.mixup_alpha = 0.2
  batch = next(data.train_iterator(c, seed=0))
  assert batch['soft_label'].shape == (64, 10)
  np.testing.assert_allclose(batch['soft_label'].sum(-1), 1.0, rtol=1e-5)


def test_dataset_info_and_class_names(cfg, tmp_path):
  info = data.dataset_info(cfg)
  assert info == data.DatasetInfo(10, 1347, 450, tuple('0123456789'), (32, 32, 3))
  data.save_class_names(info, str(tmp_path / 'work'))
  assert data.load_class_names(str(tmp_path / 'work')) == list('0123456789')


def test_to_global_on_the_local_mesh(cfg):
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  batch = next(data.train_iterator(cfg, seed=0))
  garr = data.to_global(batch, sharding)
  assert garr['image'].shape == (64, 32, 32, 3) and garr['image'].sharding == sharding
  np.testing.assert_array_equal(np.asarray(garr['label']), batch['label'])


def test_batch_not_divisible_by_processes(cfg):
  with pytest.raises(ValueError, match='not divisible by the process count 3'):
    data.train_iterator(cfg, process_index=0, process_count=3)
