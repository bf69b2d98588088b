"""Where examples come from: one split of a TFDS dataset or an image folder, in a fixed
order, optionally a selection of it (few-shot, VTAB-1k), and each process's part.

    split = sources.open_split(cfg, 'test')
    ds = split.local_dataset(process_index=0, process_count=2)  # {'image', 'label'}
    split.local_count(0, 2), split.num_examples

A split's examples are divided among processes in contiguous, near-equal parts (the
first `n % process_count` processes get one more), as `tfds.even_splits` does, so the
parts cover every example exactly once. Images come out encoded (TFDS images are read
with `SkipDecoding`, folder files as bytes); the 'decode' op decodes them.
"""
import dataclasses
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jtransfer.data import datasets, fewshot, folder


def even_bounds(n: int, process_count: int, process_index: int) -> Tuple[int, int]:
  """[start, stop) of process `process_index`'s part of n examples."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  base, extra = divmod(n, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (1 if process_index < extra else 0)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split (after any selection), with a reader for each process's part."""
  description: str  # 'uci_digits/train (5 shots)' -- for messages.
  num_examples: int  # All processes together.
  num_classes: int
  class_names: Tuple[str, ...]
  # (process_index, process_count) -> tf.data.Dataset of {'image', 'label' int64}.
  _read_local: Callable[[int, int], tf.data.Dataset] = dataclasses.field(repr=False)

  def local_count(self, process_index: int, process_count: int) -> int:
    start, stop = even_bounds(self.num_examples, process_count, process_index)
    return stop - start

  def local_dataset(self, process_index: int, process_count: int) -> tf.data.Dataset:
    ds = self._read_local(process_index, process_count)
    expected = self.local_count(process_index, process_count)
    card = int(ds.cardinality())
    if card >= 0 and card != expected:
      raise RuntimeError(f'{self.description}: process {process_index}/{process_count} '
                         f'reads {card} examples, expected {expected}')
    return ds


def _selection(cfg, split: str, *, train: bool):
  """-> (base split name, selection kind or None)."""
  if split in fewshot.VTAB1K_PARTS:
    return cfg.train_split, split
  if train and cfg.vtab1k:
    return cfg.train_split, 'train800'
  if train and cfg.shots is not None:
    return split, 'shots'
  return split, None


def _select(cfg, kind, num_examples, read_labels, where):
  if kind == 'shots':
    return fewshot.sample_per_class(read_labels(), cfg.shots, cfg.fewshot_seed,
                                    where=where)
  return fewshot.vtab1k_indices(num_examples, kind, where=where)


def _describe(cfg, base, kind):
  name = f'{cfg.dataset}/{base}'
  if kind == 'shots':
    return f'{name} ({cfg.shots} shots, seed {cfg.fewshot_seed})'
  return f'{name} ({kind})' if kind else name


# --- TFDS ---


def _keys(builder):
  keys = builder.info.supervised_keys
  if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys
  return 'image', 'label'


def _read_tfds(builder, split, *, sequential=False):
  """{'image', 'label'} in a fixed order; `sequential`: files one after another."""
  image_key, label_key = _keys(builder)
  decoders = None
  if isinstance(builder.info.features[image_key], tfds.features.Image):
    decoders = {image_key: tfds.decode.SkipDecoding()}
  read_config = tfds.ReadConfig(interleave_cycle_length=1) if sequential else None
  ds = datasets.as_dataset(builder, split, shuffle_files=False, decoders=decoders,
                           read_config=read_config)
  return ds.map(lambda ex: {'image': ex[image_key],
                            'label': tf.cast(ex[label_key], tf.int64)})


def _tfds_size(builder, split):
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError, TypeError):
    pass  # Split sizes unknown (e.g. tfds.testing.mock_data): count.
  ds = _read_tfds(builder, split)
  card = int(ds.cardinality())
  if card < 0:
    card = int(ds.reduce(np.int64(0), lambda n, _: n + 1))
  return card


def _open_tfds(cfg, split, *, train):
  builder = datasets.get_builder(cfg.dataset, cfg.data_dir)
  _, label_key = _keys(builder)
  label = builder.info.features[label_key]
  if not isinstance(label, tfds.features.ClassLabel):
    raise ValueError(f'{cfg.dataset}: feature {label_key!r} is not a ClassLabel')
  class_names = tuple(label.names)
  base, kind = _selection(cfg, split, train=train)
  base_size = _tfds_size(builder, base)
  description = _describe(cfg, base, kind)

  if kind is None:
    def read_local(p, count):
      return _read_tfds(builder, tfds.split_for_jax_process(
          base, process_index=p, process_count=count))
    return Split(description, base_size, label.num_classes, class_names, read_local)

  def read_labels():
    ds = _read_tfds(builder, base, sequential=True).map(lambda ex: ex['label'])
    return np.concatenate(list(ds.batch(4096).as_numpy_iterator()) or [np.zeros([0])])

  selected = _select(cfg, kind, base_size, read_labels, f'{cfg.dataset}/{base}')

  def read_local_selected(p, count):
    start, stop = even_bounds(len(selected), count, p)
    mine = selected[start:stop]
    keep = np.zeros(base_size, bool)
    keep[mine] = True
    keep = tf.constant(keep)
    ds = _read_tfds(builder, base, sequential=True)
    ds = ds.take(int(mine[-1]) + 1 if len(mine) else 0).enumerate()
    ds = ds.filter(_keep_by_index(keep)).map(_drop_index)
    return ds.apply(tf.data.experimental.assert_cardinality(len(mine)))

  return Split(description, len(selected), label.num_classes, class_names,
               read_local_selected)


# --- image folders ---


def _open_folder(cfg, split, *, train):
  root = folder.parse_root(cfg.dataset)
  base, kind = _selection(cfg, split, train=train)
  scanned = folder.scan(root, base, skip_corrupt=cfg.skip_corrupt,
                        class_split=cfg.train_split)
  indices = np.arange(len(scanned.paths))
  if kind is not None:
    indices = _select(cfg, kind, len(indices), lambda: scanned.labels,
                      f'{cfg.dataset}/{base}')
  paths = [scanned.paths[i] for i in indices]
  labels = scanned.labels[indices]

  def read_local(p, count):
    start, stop = even_bounds(len(paths), count, p)
    return folder.as_dataset(paths[start:stop], labels[start:stop])

  return Split(_describe(cfg, base, kind), len(paths), len(scanned.class_names),
               scanned.class_names, read_local)


def open_split(cfg, split: Optional[str] = None, *, train: bool = False) -> Split:
  """The split `split` (default: the train or eval split of cfg) of cfg.dataset.

  `train=True` applies the training selection (cfg.shots or cfg.vtab1k).
  """
  if split is None:
    split = cfg.train_split if train else cfg.eval_split
  if cfg.dataset.startswith(folder.PREFIX):
    return _open_folder(cfg, split, train=train)
  return _open_tfds(cfg, split, train=train)


def _keep_by_index(keep):
  """A tf.data predicate on (index, example): keep[index]. (Named functions, not two lambdas on
  one line, so AutoGraph can read their source and does not warn on every dataset built.)"""
  def predicate(i, ex):
    del ex
    return keep[i]
  return predicate


def _drop_index(i, ex):
  del i
  return ex

