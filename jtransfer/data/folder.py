"""Image folders in torchvision's ImageFolder layout, read with tf.data.

    root/train/<class>/*.jpg|jpeg|png|bmp|gif
    root/test/<class>/...

    split = folder.scan('/data/flowers', 'train', skip_corrupt=False)
    split.paths, split.labels, split.class_names

Class ids are the positions of the class directory names of `root/<class_split>`
('train') in sorted order, for every split; a class directory of another split that
the train split does not have is an error. Every image is decoded once when the split
is scanned (in parallel, with the same TF decoder the pipeline uses): a corrupt or
unreadable file raises ValueError naming it, or with `skip_corrupt=True` is left out and
counted in the log. Scans are memoized per process.
"""
import dataclasses
import functools
import os
from typing import Tuple

from absl import logging
import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
PREFIX = 'folder:'


@dataclasses.dataclass(frozen=True)
class FolderSplit:
  root: str
  split: str
  paths: Tuple[str, ...]  # sorted by (class, file name); only readable images
  labels: np.ndarray  # int64, ids into class_names
  class_names: Tuple[str, ...]
  skipped: Tuple[str, ...]  # corrupt files left out (skip_corrupt=True)


def parse_root(dataset: str) -> str:
  """'folder:/path/root' -> '/path/root'."""
  if not dataset.startswith(PREFIX) or not dataset[len(PREFIX):]:
    raise ValueError(f"a folder dataset is named 'folder:/path/to/root', got {dataset!r}")
  return os.path.expanduser(dataset[len(PREFIX):])


def _subdirs(path):
  if not os.path.isdir(path):
    raise FileNotFoundError(f'image folder split not found: {path} (expected the layout '
                            '<root>/<split>/<class>/<image files>)')
  return sorted(e.name for e in os.scandir(path) if e.is_dir())


def class_names(root: str, class_split: str = 'train') -> Tuple[str, ...]:
  """The sorted class directory names of `root/class_split`."""
  names = _subdirs(os.path.join(root, class_split))
  if not names:
    raise ValueError(f'no class directories in {os.path.join(root, class_split)}')
  return tuple(names)


def _decodes(paths):
  """Returns the boolean array: does TF read and decode each file?"""
  ok = np.zeros(len(paths), bool)
  if not paths:
    return ok

  def check(i, path):
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    return i, tf.shape(image)

  ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)),
                                           tf.constant(list(paths), tf.string)))
  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  for i, _ in ds.as_numpy_iterator():
    ok[i] = True
  return ok


@functools.lru_cache(maxsize=32)
def scan(root: str, split: str, *, skip_corrupt: bool = False,
         class_split: str = 'train') -> FolderSplit:
  """Lists and checks the images of `root/split`; see the module docstring."""
  names = class_names(root, class_split)
  split_dir = os.path.join(root, split)
  unknown = sorted(set(_subdirs(split_dir)) - set(names))
  if unknown:
    raise ValueError(f'{split_dir}: class directories {unknown} are not in '
                     f'{os.path.join(root, class_split)}')
  paths, labels = [], []
  for label, name in enumerate(names):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue
    for file_name in sorted(os.listdir(class_dir)):
      if file_name.lower().endswith(IMAGE_EXTENSIONS):
        paths.append(os.path.join(class_dir, file_name))
        labels.append(label)
  ok = _decodes(paths)
  bad = tuple(p for p, good in zip(paths, ok) if not good)
  if bad and not skip_corrupt:
    raise ValueError(f'{split_dir}: {len(bad)} corrupt or unreadable image(s): '
                     f'{", ".join(bad[:10])}{" ..." if len(bad) > 10 else ""} '
                     '(set data.skip_corrupt=True to leave them out)')
  if bad:
    logging.warning('%s: skipped %d corrupt or unreadable image(s): %s', split_dir,
                    len(bad), ', '.join(bad[:10]) + (' ...' if len(bad) > 10 else ''))
  paths = tuple(p for p, good in zip(paths, ok) if good)
  labels = np.asarray(labels, np.int64)[ok]
  if not paths:
    raise ValueError(f'{split_dir}: no readable images with extensions {IMAGE_EXTENSIONS}')
  return FolderSplit(root=root, split=split, paths=paths, labels=labels,
                     class_names=names, skipped=bad)


def as_dataset(paths, labels) -> tf.data.Dataset:
  """{'image': encoded bytes, 'label': int64} for the given files, in order."""
  ds = tf.data.Dataset.from_tensor_slices({
      'image': tf.constant(list(paths), tf.string, shape=[len(paths)]),
      'label': np.asarray(labels, np.int64).reshape([len(paths)])})
  return ds.map(lambda ex: {'image': tf.io.read_file(ex['image']), 'label': ex['label']},
                num_parallel_calls=tf.data.AUTOTUNE)
