"""Preprocessing ops: plain Python functions on tf tensors, built from a list of specs.

    from jtransfer.data import preprocess
    pp = preprocess.build_pp(['decode', {'op': 'resize', 'size': 32},
                              'grayscale_to_rgb', {'op': 'value_range', 'in_max': 16}])
    image = pp(png_bytes)                      # eagerly ...
    ds = ds.map(pp)                            # ... or inside tf.data, on {'image': ...} dicts

A spec is a list whose items are an op name, or a dict `{'op': name, **arguments}`.
`build_pp` builds every op at once, so an unknown op or a bad argument raises ValueError
when the config is read, never at trace time. Random ops take a stateless seed: the
pipeline passes one per example (derived from the run seed and the example's position in
the stream), so a run is reproducible; called without a seed they use a fixed one.

Ops (torchvision's equivalent in brackets):
  decode(channels=None)          bytes -> uint8 HWC; arrays pass through (HW gets C=1)
  resize(size, method, antialias)                                    [Resize((h, w))]
  resize_small(size, ...)        shorter side to `size`, keeps aspect      [Resize(int)]
  center_crop(size)              pads with zeros if smaller           [CenterCrop]
  random_crop(size, padding=0)   zero padding, then a random crop    [RandomCrop]
  inception_crop(size, area_min=0.08, area_max=1, ratio_min=3/4, ratio_max=4/3)
                                                               [RandomResizedCrop]
  flip_lr(p=0.5)                                              [RandomHorizontalFlip]
  value_range(vmin=-1, vmax=1, in_min=0, in_max=255, clip=False)  affine map, float32
  normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, in_max=255)
                                 x / in_max, then (x - mean) / std  [ToTensor + Normalize]
  grayscale_to_rgb()             1 -> 3 channels (3 channels pass through)
  rgb_to_grayscale()             3 -> 1 channel, ITU-R 601-2 luma     [Grayscale]
"""
import dataclasses
import inspect
import numbers
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from jtransfer.data import corruptions

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics, on [0, 1].
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESIZE_METHODS = ('bilinear', 'nearest', 'bicubic', 'area', 'lanczos3', 'lanczos5',
                   'gaussian', 'mitchellcubic')


@dataclasses.dataclass(frozen=True)
class Op:
  """One built op: `fn(image, seed)`; `seed` is None unless `random`."""
  name: str
  fn: Callable[[tf.Tensor, Optional[tf.Tensor]], tf.Tensor]
  random: bool = False


# --- argument checks: they run when the op is built, i.e. when the config is read ---


def _size(size):
  """An int or an (h, w) pair of positive ints -> (h, w)."""
  if isinstance(size, numbers.Integral) and not isinstance(size, bool):
    size = (size, size)
  if (not isinstance(size, (list, tuple)) or len(size) != 2 or
      not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
              for s in size)):
    raise ValueError(f'size must be a positive int or an (h, w) pair, got {size!r}')
  return int(size[0]), int(size[1])


def _number(name, value, *, low=None, high=None):
  if not isinstance(value, numbers.Real) or isinstance(value, bool):
    raise ValueError(f'{name} must be a number, got {value!r}')
  if (low is not None and value < low) or (high is not None and value > high):
    raise ValueError(f'{name} must be in [{low}, {high}], got {value!r}')
  return float(value)


def _method(method):
  if method not in _RESIZE_METHODS:
    raise ValueError(f'method must be one of {_RESIZE_METHODS}, got {method!r}')
  return method


def _channels_vector(name, value):
  values = (value,) if isinstance(value, numbers.Real) else tuple(value)
  return tuple(_number(name, v) for v in values)


# --- the ops ---


def decode(channels=None):
  """Decodes PNG/JPEG/GIF/BMP bytes to uint8 [H, W, C]; arrays pass through.

  `channels`: None keeps what is stored; 1 or 3 converts (also for arrays).
  """
  if channels not in (None, 1, 3):
    raise ValueError(f'channels must be None, 1 or 3, got {channels!r}')

  def fn(x, _):
    if x.dtype == tf.string:
      x = tf.io.decode_image(x, channels=channels or 0, expand_animations=False)
      if channels:
        x.set_shape([None, None, channels])
      return x
    if x.shape.rank == 2:
      x = x[..., None]
    if channels == 3:
      return _to_rgb(x)
    if channels == 1 and x.shape[-1] == 3:
      return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(x, tf.float32))), x.dtype)
    return x

  return Op('decode', fn)


def resize(size, method='bilinear', antialias=True):
  """Resizes to exactly `size` (int or (h, w)); returns float32."""
  h, w = _size(size)
  method = _method(method)
  return Op('resize', lambda x, _: tf.image.resize(x, (h, w), method, antialias=antialias))


def resize_small(size, method='bilinear', antialias=True):
  """Resizes so that the shorter side is `size`, keeping the aspect ratio (float32)."""
  size, _ = _size(size)
  method = _method(method)

  def fn(x, _):
    shape = tf.shape(x)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    ratio = size / tf.minimum(h, w)
    # Like torchvision: the longer side is truncated, the shorter is exactly `size`.
    new_h = tf.where(h <= w, size, tf.cast(tf.floor(h * ratio), tf.int32))
    new_w = tf.where(w < h, size, tf.cast(tf.floor(w * ratio), tf.int32))
    return tf.image.resize(x, tf.stack([new_h, new_w]), method, antialias=antialias)

  return Op('resize_small', fn)


def _pad_to_at_least(x, h, w):
  shape = tf.shape(x)
  pad_h = tf.maximum(h - shape[0], 0)
  pad_w = tf.maximum(w - shape[1], 0)
  return tf.pad(x, [[pad_h // 2, (pad_h + 1) // 2], [pad_w // 2, (pad_w + 1) // 2], [0, 0]])


def center_crop(size):
  """Crops the central (h, w) window, zero-padding first if the image is smaller."""
  h, w = _size(size)

  def fn(x, _):
    x = _pad_to_at_least(x, h, w)
    shape = tf.shape(x)
    # torchvision rounds the offsets (half to even, as tf.round does).
    top = tf.cast(tf.round(tf.cast(shape[0] - h, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - w, tf.float32) / 2), tf.int32)
    out = x[top:top + h, left:left + w]
    out.set_shape([h, w, x.shape[-1]])
    return out

  return Op('center_crop', fn)


def random_crop(size, padding=0):
  """Zero-pads `padding` pixels on every side, then crops a random (h, w) window."""
  h, w = _size(size)
  if not isinstance(padding, numbers.Integral) or padding < 0:
    raise ValueError(f'padding must be an int >= 0, got {padding!r}')

  def fn(x, seed):
    if padding:
      x = tf.pad(x, [[padding, padding], [padding, padding], [0, 0]])
    x = _pad_to_at_least(x, h, w)
    out = tf.image.stateless_random_crop(x, tf.stack([h, w, tf.shape(x)[-1]]), seed)
    out.set_shape([h, w, x.shape[-1]])
    return out

  return Op('random_crop', fn, random=True)


def inception_crop(size, area_min=0.08, area_max=1.0, ratio_min=3 / 4, ratio_max=4 / 3,
                   method='bilinear', antialias=True):
  """Random crop of `area_min..area_max` of the area and aspect ratio (w/h) in
  `ratio_min..ratio_max`, resized to `size` (float32); the whole image after 10 misses."""
  h, w = _size(size)
  area_min = _number('area_min', area_min, low=0.0, high=1.0)
  area_max = _number('area_max', area_max, low=area_min, high=1.0)
  if area_min <= 0:
    raise ValueError(f'area_min must be > 0, got {area_min}')
  ratio_min = _number('ratio_min', ratio_min, low=1e-3)
  ratio_max = _number('ratio_max', ratio_max, low=ratio_min)
  method = _method(method)

  def fn(x, seed):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(x), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        area_range=(area_min, area_max), aspect_ratio_range=(ratio_min, ratio_max),
        min_object_covered=0.0, max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(x, begin, crop_size)
    return tf.image.resize(crop, (h, w), method, antialias=antialias)

  return Op('inception_crop', fn, random=True)


def flip_lr(p=0.5):
  """Flips left-right with probability `p`."""
  p = _number('p', p, low=0.0, high=1.0)

  def fn(x, seed):
    flip = tf.random.stateless_uniform([], seed) < p
    return tf.cond(flip, lambda: tf.reverse(x, axis=[1]), lambda: x)

  return Op('flip_lr', fn, random=True)


def value_range(vmin=-1.0, vmax=1.0, in_min=0.0, in_max=255.0, clip=False):
  """Maps [in_min, in_max] linearly onto [vmin, vmax] (float32)."""
  vmin, vmax = _number('vmin', vmin), _number('vmax', vmax)
  in_min, in_max = _number('in_min', in_min), _number('in_max', in_max)
  if in_max <= in_min:
    raise ValueError(f'in_max ({in_max}) must be > in_min ({in_min})')
  if not isinstance(clip, bool):
    raise ValueError(f'clip must be a bool, got {clip!r}')
  scale = (vmax - vmin) / (in_max - in_min)

  def fn(x, _):
    x = tf.cast(x, tf.float32)
    if clip:
      x = tf.clip_by_value(x, in_min, in_max)
    return (x - in_min) * scale + vmin

  return Op('value_range', fn)


def corrupt(name, severity, seed=0, in_max=255.0):
  """`{'op': 'corrupt', 'name': ..., 'severity': 1..5, 'seed': 0}`: `corruptions.corrupt` as an op.

  `in_max` is the value range of the pixels at that point (255 for uint8 images; 16 for
  uci_digits), which the op scales to [0, 255] and back; `corruptions.shifted_pp` inserts it.
  """
  corruptions.check_args(name, severity, seed, in_max)
  return Op('corrupt', lambda x, _: corruptions.corrupt(x, name, severity, seed=seed,
                                                       in_max=in_max))


def normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, in_max=255.0):
  """torchvision's ToTensor + Normalize: x / in_max, then (x - mean) / std (float32)."""
  mean, std = _channels_vector('mean', mean), _channels_vector('std', std)
  in_max = _number('in_max', in_max)
  if in_max <= 0 or any(s <= 0 for s in std):
    raise ValueError(f'in_max and std must be > 0, got in_max={in_max}, std={std}')
  mean_t, std_t = np.asarray(mean, np.float32), np.asarray(std, np.float32)

  def fn(x, _):
    return (tf.cast(x, tf.float32) / in_max - mean_t) / std_t

  return Op('normalize', fn)


def _to_rgb(x):
  channels = x.shape[-1]
  if channels == 3:
    return x
  if channels == 1:
    return tf.tile(x, [1, 1, 3])
  out = tf.cond(tf.equal(tf.shape(x)[-1], 1), lambda: tf.tile(x, [1, 1, 3]), lambda: x)
  out.set_shape(x.shape[:-1].concatenate([3]))
  return out


def grayscale_to_rgb():
  """Repeats a single channel 3 times; 3-channel images pass through."""
  return Op('grayscale_to_rgb', lambda x, _: _to_rgb(x))


def rgb_to_grayscale():
  """ITU-R 601-2 luma (as torchvision's Grayscale), keeps the dtype; 1 channel out."""

  def fn(x, _):
    if x.shape[-1] == 1:
      return x
    gray = tf.image.rgb_to_grayscale(tf.cast(x, tf.float32))
    return tf.cast(tf.round(gray), x.dtype) if x.dtype.is_integer else gray

  return Op('rgb_to_grayscale', fn)


# Every op a spec may name. Explicit: an op exists iff it is listed here.
OPS = {
    'decode': decode,
    'resize': resize,
    'resize_small': resize_small,
    'center_crop': center_crop,
    'random_crop': random_crop,
    'inception_crop': inception_crop,
    'flip_lr': flip_lr,
    'value_range': value_range,
    'normalize': normalize,
    'grayscale_to_rgb': grayscale_to_rgb,
    'rgb_to_grayscale': rgb_to_grayscale,
    'corrupt': corrupt,  # eval-only OOD test sets: jtransfer/data/corruptions.py
}


def build_op(spec: Any, where: str = 'pp') -> Op:
  """Builds one op from `'name'` or `{'op': 'name', **kwargs}`; ValueError naming `where`."""
  if isinstance(spec, str):
    name, kwargs = spec, {}
  elif hasattr(spec, 'items'):  # dict or ConfigDict
    kwargs = dict(spec.items())
    if 'op' not in kwargs:
      raise ValueError(f'{where}: an op spec needs an "op" key, got {kwargs!r}')
    name = kwargs.pop('op')
  else:
    raise ValueError(f"{where}: an op spec is a name or a dict {{'op': name, ...}}, "
                     f'got {spec!r}')
  if name not in OPS:
    raise ValueError(f'{where}: unknown op {name!r}; known ops: {sorted(OPS)}')
  factory = OPS[name]
  signature = inspect.signature(factory)
  unexpected = sorted(set(kwargs) - set(signature.parameters))
  if unexpected:
    raise ValueError(f'{where} ({name}): unexpected argument(s) {unexpected}; signature: '
                     f'{name}{signature}')
  try:
    signature.bind(**kwargs)
  except TypeError as e:
    raise ValueError(f'{where} ({name}): {e}; signature: {name}{signature}') from None
  try:
    return factory(**kwargs)
  except ValueError as e:
    raise ValueError(f'{where} ({name}): {e}') from None


class Preprocess:
  """A built pipeline: `pp(image, seed=None)` or `pp({'image': ..., ...}, seed=None)`."""

  def __init__(self, ops: Sequence[Op], *, first_index: int = 0):
    self.ops = tuple(ops)
    self._first_index = first_index  # position of ops[0] in the full spec (seeds).

  @property
  def random(self) -> bool:
    return any(op.random for op in self.ops)

  def split_deterministic_prefix(self):
    """-> (the leading non-random ops, the rest): the first part can be cached."""
    n = next((i for i, op in enumerate(self.ops) if op.random), len(self.ops))
    return (Preprocess(self.ops[:n], first_index=self._first_index),
            Preprocess(self.ops[n:], first_index=self._first_index + n))

  def __call__(self, x, seed=None):
    if isinstance(x, dict):
      return {**x, 'image': self(x['image'], seed)}
    x = tf.convert_to_tensor(x)
    if seed is None:
      seed = tf.constant([0, 0], tf.int64)
    seed = tf.cast(seed, tf.int64)
    for i, op in enumerate(self.ops):
      op_seed = None
      if op.random:
        op_seed = tf.random.experimental.stateless_fold_in(seed, self._first_index + i)
      x = op.fn(x, op_seed)
    return x

  def __repr__(self):
    return f'Preprocess({[op.name for op in self.ops]})'


def build_pp(spec: Sequence[Any], *, name: str = 'pp') -> Preprocess:
  """Builds a `Preprocess` from a list of op specs; ValueError names `name[i]`."""
  if isinstance(spec, (str, bytes)) or not isinstance(spec, (list, tuple)):
    raise ValueError(f'{name}: expected a list of op specs, got {spec!r}')
  return Preprocess([build_op(s, f'{name}[{i}]') for i, s in enumerate(spec)])
