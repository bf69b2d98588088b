"""scikit-learn's digits (UCI optdigits test set) as an offline TFDS dataset.

    import tensorflow_datasets as tfds
    from jtransfer.data.datasets import uci_digits
    builder = uci_digits.UciDigits(data_dir='/tmp/tfds')
    builder.download_and_prepare()        # reads the copy inside scikit-learn; no network
    ds = builder.as_dataset(split='train')

1,797 grayscale 8x8 images of handwritten digits, 10 classes, pixel values 0..16
(stored as they are in uint8, not rescaled: preprocessing maps them with `in_max=16`).

Fixed split, in the order `sklearn.datasets.load_digits()` returns the examples:
  train = the first 1,347 examples, test = the last 450 (a 75/25 cut, 133..137
  train and 41..48 test examples per class).
"""
import numpy as np
import tensorflow_datasets as tfds

from jtransfer.data.datasets import _offline

NUM_TRAIN = 1347
NUM_TEST = 450


def load_arrays():
  """Returns (images uint8 [1797, 8, 8, 1] with values 0..16, labels int64 [1797])."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = digits.images.astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int64)
  assert images.shape == (NUM_TRAIN + NUM_TEST, 8, 8, 1), images.shape
  return images, labels


class UciDigits(_offline.OfflineBuilder):
  """scikit-learn digits: 1,347 train / 450 test 8x8 gray images, values 0..16."""

  IMAGE_SHAPE = (8, 8, 1)
  CLASS_NAMES = tuple(str(i) for i in range(10))
  HOMEPAGE = 'https://archive.ics.uci.edu/dataset/80'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First 1,347 examples train, last 450 test.'}

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded: the data ships with scikit-learn.
    images, labels = load_arrays()
    return {
        'train': self._generate_examples(images[:NUM_TRAIN], labels[:NUM_TRAIN], 0),
        'test': self._generate_examples(images[NUM_TRAIN:], labels[NUM_TRAIN:],
                                        NUM_TRAIN),
    }

  def _generate_examples(self, images, labels, offset):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield offset + i, {'image': image, 'label': int(label)}
