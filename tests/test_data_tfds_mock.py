"""The TFDS path with `tfds.testing.mock_data`: no files, no network."""
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from jtransfer import data


def _cfg(dataset):
  cfg = data.get_config()
  cfg.dataset = dataset
  cfg.batch_size, cfg.eval_batch_size, cfg.image_size = 4, 8, 16
  return cfg


def test_mocked_cifar10_train_and_padded_eval():
  cfg = _cfg('cifar10')
  with tfds.testing.mock_data(num_examples=20):
    info = data.dataset_info(cfg)
    assert (info.num_classes, info.num_train, info.image_shape) == (10, 20, (16, 16, 3))
    assert len(info.class_names) == 10
    batch = next(data.train_iterator(cfg, seed=0))
    assert batch['image'].shape == (4, 16, 16, 3)
    batches = list(data.eval_iterator(cfg))
  assert len(batches) == 3  # 20 examples, batches of 8: 8 + 8 + 4 real.
  assert [int(b['mask'].sum()) for b in batches] == [8, 8, 4]


def _bad_labels(self, split, decoders=None, read_config=None, shuffle_files=False):
  del self, split, decoders, read_config, shuffle_files
  image = tf.io.encode_png(tf.zeros([28, 28, 1], tf.uint8))
  return tf.data.Dataset.from_tensor_slices({
      'image': tf.stack([image] * 4), 'label': tf.constant([1, 2, 12, 3], tf.int64)})


def test_label_out_of_range_names_dataset_and_split():
  cfg = _cfg('mnist')
  with tfds.testing.mock_data(as_dataset_fn=_bad_labels):
    with pytest.raises(ValueError, match=r'mnist/test: label outside range\(num_classes\) '
                       r'= \[0, 10\), got 12'):
      list(data.eval_iterator(cfg))
