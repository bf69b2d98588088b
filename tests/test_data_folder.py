"""Image folders (torchvision ImageFolder layout), with a corrupt file."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from jtransfer import data


def _write_png(path, value):
  image = np.full([5, 7, 3], value, np.uint8)
  tf.io.write_file(path, tf.io.encode_png(image))


@pytest.fixture
def root(tmp_path):
  """train: cat 3, dog 4 (+1 corrupt), eel 2; test: cat 1, dog 2. Pixel value = id."""
  value = 0
  for split, counts in [('train', {'cat': 3, 'dog': 4, 'eel': 2}),
                        ('test', {'cat': 1, 'dog': 2})]:
    for name, count in counts.items():
      os.makedirs(tmp_path / split / name)
      for i in range(count):
        value += 10
        _write_png(str(tmp_path / split / name / f'{i}.png'), value)
  (tmp_path / 'train' / 'dog' / 'broken.png').write_bytes(b'\x89PNG not really')
  (tmp_path / 'train' / 'dog' / 'notes.txt').write_text('not an image')
  return tmp_path


# Keeps pixel values (each image's id).
_PP_IDENTITY = [{'op': 'decode', 'channels': 3}, {'op': 'center_crop', 'size': 4}]


def _cfg(root, **overrides):
  cfg = data.get_config()
  cfg.dataset = f'folder:{root}'
  cfg.batch_size, cfg.eval_batch_size, cfg.image_size = 4, 2, 8
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def test_corrupt_image_is_an_error_naming_the_file(root):
  with pytest.raises(ValueError, match=r'corrupt or unreadable .*dog/broken\.png'):
    data.dataset_info(_cfg(root))


def test_skip_corrupt_counts_in_the_log(root, caplog):
  info = data.dataset_info(_cfg(root, skip_corrupt=True))
  assert info.class_names == ('cat', 'dog', 'eel') and info.num_classes == 3
  assert (info.num_train, info.num_eval, info.image_shape) == (9, 3, (8, 8, 3))
  assert 'skipped 1 corrupt' in caplog.text and 'broken.png' in caplog.text


def test_folder_train_eval_and_class_names_file(root, tmp_path):
  cfg = _cfg(root, skip_corrupt=True, pp_eval=_PP_IDENTITY)
  batches = list(data.eval_iterator(cfg))
  values = [int(b['image'][i, 0, 0, 0]) for b in batches for i in np.flatnonzero(b['mask'])]
  labels = [int(b['label'][i]) for b in batches for i in np.flatnonzero(b['mask'])]
  assert values == [100, 110, 120] and labels == [0, 1, 1]  # Sorted classes and files.
  batch = next(data.train_iterator(cfg, seed=0))
  assert batch['image'].shape == (4, 8, 8, 3)
  path = data.save_class_names(data.dataset_info(cfg), str(tmp_path / 'workdir'))
  assert json.load(open(path)) == ['cat', 'dog', 'eel']


def test_two_processes_cover_the_folder_once(root):
  cfg = _cfg(root, skip_corrupt=True, pp_eval=_PP_IDENTITY)
  seen = []
  for p in (0, 1):
    for b in data.eval_iterator(cfg, 'train', process_index=p, process_count=2):
      seen += [int(v) for v in b['image'][b['mask'], 0, 0, 0]]
  assert sorted(seen) == [10, 20, 30, 40, 50, 60, 70, 80, 90]


def test_test_class_missing_from_train_is_an_error(root):
  os.makedirs(root / 'test' / 'fox')
  with pytest.raises(ValueError, match=r"\['fox'\] are not in"):
    data.dataset_info(_cfg(root, skip_corrupt=True))
