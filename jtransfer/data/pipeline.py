"""Train and eval input pipelines: per-process parts, seeded and resumable, padded eval.

    it = train_iterator(cfg, seed=0, start_step=0)     # infinite, process-local numpy
    batch = next(it)    # {'image': f32 [B/P, H, W, C], 'label': i32 [B/P]}
    for batch in eval_iterator(cfg):                    # one pass, padded
      batch['mask']     # bool [B/P]: False on padding
    global_batch = to_global(batch, sharding)

Training stream of one process: its part of the (selected) train split, shuffled anew
each epoch with a seed derived from (seed, epoch), epochs concatenated, cut into local
batches. Example number i of the stream gets the augmentation seed (seed, i) folded with
the process index, so the batch of step s depends only on (seed, s): a run resumed with
`start_step=s` sees what an uninterrupted one sees after s batches (skipping the first
s * B/P examples of the shuffled stream is all the work a resume does).

Eval: every process pads its part to the same number of whole batches; 'mask' marks the
real examples, so each one is counted once across processes and none is dropped.
"""
import math
import re
from typing import Iterator, Optional

import jax
import numpy as np
import tensorflow as tf

from jtransfer.data import config as config_lib
from jtransfer.data import mixup as mixup_lib
from jtransfer.data import preprocess, sources

_LABEL_ERROR = 'jtransfer-label-out-of-range'
_SEED_MODULUS = 2**31 - 1


def _process(process_index, process_count):
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  return process_index, process_count


def _local_batch(global_batch, process_count, key):
  if global_batch % process_count:
    raise ValueError(f'data.{key}={global_batch} is not divisible by the process count '
                     f'{process_count}')
  return global_batch // process_count


def _check_labels(split: sources.Split):
  """A map fn that fails (InvalidArgumentError) on a label outside [0, num_classes)."""
  message = (f'{_LABEL_ERROR}: {split.description}: label outside range(num_classes) = '
             f'[0, {split.num_classes}), got')

  def fn(ex):
    label = ex['label']
    ok = tf.logical_and(label >= 0, label < split.num_classes)
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, label])]):
      return {'image': ex['image'], 'label': tf.identity(label)}

  return fn


def _finalize(ex):
  return {'image': tf.cast(ex['image'], tf.float32), 'label': tf.cast(ex['label'], tf.int32)}


def _check_shape(ds, key):
  shape = ds.element_spec['image'].shape
  if shape.rank != 3 or not shape.is_fully_defined():
    raise ValueError(
        f'data.{key} must produce images of one fixed shape [H, W, C], but its output '
        f'shape is {shape}: end it with a fixed-size op (resize, center_crop, random_crop,'
        " inception_crop) and fix the channels ({'op': 'decode', 'channels': 3} or "
        "'grayscale_to_rgb')")
  return tuple(shape.as_list())


def _as_numpy(ds) -> Iterator[dict]:
  """Iterates `ds` as numpy, turning a label check failure into a ValueError."""
  it = iter(ds.as_numpy_iterator())
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except tf.errors.InvalidArgumentError as e:
      found = re.search(_LABEL_ERROR + r': (.*?)\] \[(-?\d+)\]', e.message)
      if found:
        raise ValueError(f'{found.group(1)} {found.group(2)}') from None
      raise
    yield batch


def _element_seed(seed, index, process_index):
  seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
  return tf.random.experimental.stateless_fold_in(seed, process_index)


def train_dataset(cfg, *, seed: int = 0, start_step: int = 0,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> tf.data.Dataset:
  """The tf.data pipeline behind `train_iterator` (batched, process-local)."""
  config_lib.validate_config(cfg)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  p, count = _process(process_index, process_count)
  local_batch = _local_batch(cfg.batch_size, count, 'batch_size')
  split = sources.open_split(cfg, train=True)
  n = split.local_count(p, count)
  if n == 0:
    raise ValueError(f'{split.description}: process {p} of {count} has no examples')
  pp = preprocess.build_pp(config_lib.resolve_pp(cfg, train=True), name='data.pp_train')

  examples = split.local_dataset(p, count).map(_check_labels(split))
  if cfg.cache:
    fixed, pp = pp.split_deterministic_prefix()
    examples = examples.map(fixed, num_parallel_calls=tf.data.AUTOTUNE).cache()

  first = start_step * local_batch  # Position of the first example in the stream.
  first_epoch, offset = divmod(first, n)
  buffer = min(cfg.shuffle_buffer, n)

  def epoch(e):
    epoch_seed = (tf.constant(seed, tf.int64) * 1_000_003 + e) % _SEED_MODULUS
    return examples.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch).skip(offset)
  ds = tf.data.Dataset.zip(tf.data.Dataset.counter(first), ds)
  ds = ds.map(lambda i, ex: _finalize(pp(ex, seed=_element_seed(seed, i, p))),
              num_parallel_calls=tf.data.AUTOTUNE)
  _check_shape(ds, 'pp_train')
  ds = ds.batch(local_batch, drop_remainder=True)
  if cfg.mixup_alpha > 0:
    def mix(step, batch):
      step_seed = _element_seed(seed, step, p)
      step_seed = tf.random.experimental.stateless_fold_in(step_seed, 0x6D1C)
      return mixup_lib.mixup(batch, seed=step_seed, alpha=cfg.mixup_alpha,
                             num_classes=split.num_classes)
    ds = tf.data.Dataset.zip(tf.data.Dataset.counter(start_step), ds).map(mix)
  return ds.prefetch(cfg.prefetch)


def train_iterator(cfg, seed: int = 0, start_step: int = 0, *,
                   process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> Iterator[dict]:
  """Infinite iterator of process-local numpy batches, deterministic in (seed, step).

  {'image': float32 [batch_size // process_count, H, W, C], 'label': int32 [...]}, plus
  'soft_label' float32 [..., num_classes] when cfg.mixup_alpha > 0.
  """
  ds = train_dataset(cfg, seed=seed, start_step=start_step, process_index=process_index,
                     process_count=process_count)
  return _as_numpy(ds)


def eval_dataset(cfg, split: Optional[str] = None, *,
                 process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> tf.data.Dataset:
  """The tf.data pipeline behind `eval_iterator` (finite, padded, process-local)."""
  config_lib.validate_config(cfg)
  p, count = _process(process_index, process_count)
  local_batch = _local_batch(cfg.eval_batch_size, count, 'eval_batch_size')
  source = sources.open_split(cfg, split)
  num_batches = math.ceil(source.local_count(0, count) / local_batch)  # 0 has the most.
  num_padding = num_batches * local_batch - source.local_count(p, count)
  pp = preprocess.build_pp(config_lib.resolve_pp(cfg, train=False), name='data.pp_eval')

  ds = source.local_dataset(p, count).map(_check_labels(source))
  ds = ds.map(lambda ex: {**_finalize(pp(ex)), 'mask': tf.constant(True)},
              num_parallel_calls=tf.data.AUTOTUNE)
  shape = _check_shape(ds, 'pp_eval')
  padding = {'image': tf.zeros(shape, tf.float32), 'label': tf.constant(0, tf.int32),
             'mask': tf.constant(False)}
  ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat(num_padding))
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(cfg.prefetch)


def eval_iterator(cfg, split: Optional[str] = None, *,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[dict]:
  """One padded pass over `split` (default cfg.eval_split) as process-local numpy batches.

  {'image': float32 [eval_batch_size // process_count, H, W, C], 'label': int32,
   'mask': bool}; every process yields the same number of batches.
  """
  ds = eval_dataset(cfg, split, process_index=process_index, process_count=process_count)
  return _as_numpy(ds)


def split_examples(cfg, split: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Every example of ``split`` once, in split order, eval-preprocessed, in one process:
  ``(images, labels)`` per batch with the padding dropped. The whole split: ``cfg.shots`` and
  ``cfg.vtab1k`` are ignored (callers pick few-shot subsets from the same order with
  ``sample_per_class``)."""
  cfg = cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.shots, cfg.vtab1k = None, False
  for batch in eval_iterator(cfg, split, process_index=0, process_count=1):
    keep = np.asarray(batch['mask'])
    yield np.asarray(batch['image'])[keep], np.asarray(batch['label'])[keep]


def to_global(local_batch, sharding):
  """Process-local numpy leaves -> global jax.Arrays with `sharding` (batch axis first)."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)
