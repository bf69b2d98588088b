"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), read offline from its idx files.

    from jtransfer.data.datasets import fashion_mnist
    builder = fashion_mnist.FashionMnist(data_dir='/tmp/tfds')
    builder.download_and_prepare()        # reads the four .gz idx files; no network

70,000 28×28 grey images of clothing in 10 classes, the original 60,000 / 10,000 train/test
split (MIT licence, github.com/zalandoresearch/fashion-mnist). TFDS stores each split in the
deterministic order of its examples' key hashes, so a prefix such as ``train[:3000]`` is a
fixed, class-mixed sample. The files come from
Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``; ``make demo``
and ``make test`` install it where they can), which puts them in ``DEFAULT_DIR``; the environment
variable ``JTRANSFER_FASHION_MNIST_DIR`` names another folder holding the same four files.

Configs name it ``fashion_mnist`` (``datasets.OFFLINE_BUILDERS``); its TFDS name is
``fashion_mnist_offline``, so it never mixes with a TFDS-prepared ``fashion_mnist`` in the same
data_dir.

Preparing all 70,000 images takes about 20-25 s on a 2-core CPU, once (38 MB written).
"""
import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

from jtransfer.data.datasets import _offline

DEFAULT_DIR = '/usr/share/datasets/fashion-mnist'
ENV = 'JTRANSFER_FASHION_MNIST_DIR'
FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
               'Sneaker', 'Bag', 'Ankle boot')
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def source_dir() -> str:
  """The folder the idx files are read from: ``$JTRANSFER_FASHION_MNIST_DIR`` or ``DEFAULT_DIR``."""
  return os.environ.get(ENV) or DEFAULT_DIR


def how_to_get(missing: str) -> str:
  """The error text for a missing idx file: where the files come from and how to point at them."""
  where = (f'{ENV} is set to {os.environ[ENV]!r}, which is read instead of {DEFAULT_DIR}. '
           if os.environ.get(ENV) else '')
  return (f'Fashion-MNIST: {missing} not found. {where}On Debian/Ubuntu: apt-get install '
          f'dataset-fashion-mnist (files in {DEFAULT_DIR}); elsewhere put the four idx .gz files '
          '(github.com/zalandoresearch/fashion-mnist, MIT licence) in a folder and set '
          f'{ENV} to it.')


def read_idx(path: str, magic: int) -> np.ndarray:
  """The array of one gzip idx file; ValueError naming the file when it is not one."""
  if not os.path.isfile(path):
    raise FileNotFoundError(how_to_get(path))
  try:
    with gzip.open(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f'{path}: not a readable gzip file ({e})') from e
  if len(raw) < 8 or int.from_bytes(raw[:4], 'big') != magic:
    raise ValueError(f'{path}: not an idx file of magic number {magic}')
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  offset = 4 + 4 * ndim
  if len(raw) - offset != int(np.prod(shape)):
    raise ValueError(f'{path}: header says {shape} ({int(np.prod(shape))} bytes), the file holds '
                     f'{len(raw) - offset}: truncated or corrupt')
  return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def load_split(split: str, directory: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``(images uint8 [n, 28, 28, 1], labels int64 [n])`` of 'train' or 'test', in file order."""
  directory = directory or source_dir()
  images_file, labels_file = (os.path.join(directory, f) for f in FILES[split])
  images = read_idx(images_file, IMAGES_MAGIC)
  labels = read_idx(labels_file, LABELS_MAGIC).astype(np.int64)
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise ValueError(f'{images_file}: images of shape {images.shape[1:]}, expected (28, 28)')
  if len(images) != len(labels):
    raise ValueError(f'{images_file} has {len(images)} images, {labels_file} {len(labels)} labels')
  if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
    raise ValueError(f'{labels_file}: labels outside 0..9 ({labels.min()}..{labels.max()})')
  return images[..., None], labels


class FashionMnist(_offline.OfflineBuilder, skip_registration=True):
  """Fashion-MNIST: 60,000 train / 10,000 test 28×28 grey images, 10 classes."""

  name = 'fashion_mnist_offline'
  IMAGE_SHAPE = (28, 28, 1)
  CLASS_NAMES = CLASS_NAMES  # the module's list, above
  HOMEPAGE = 'https://github.com/zalandoresearch/fashion-mnist'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'The original train/test split.'}

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded: the files are on disk.
    return {split: self._generate_examples(*load_split(split)) for split in FILES}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image, 'label': int(label)}
