"""Deterministic image corruptions for out-of-distribution test sets (CIFAR-10-C / MNIST-C style).

    from jtransfer import data
    from jtransfer.data import corruptions
    pp_eval = corruptions.shifted_pp(data.resolve_pp(cfg, train=False), "gaussian_noise",
                                     severity=3, seed=0)
    # -> [..., {'op': 'corrupt', 'name': 'gaussian_noise', 'severity': 3, 'seed': 0,
    #           'in_max': 255.0}, 'normalize']
    noisy = corruptions.corrupt(image, "elastic", 5, seed=0)   # a float image in [0, 255]

Each corruption maps a float image [H, W, C] with values in [0, in_max] to one of the same shape,
float32, clipped back to [0, in_max]; severities are 1..5. It is built from TensorFlow ops only,
so it runs eagerly or inside tf.data as the pp op 'corrupt' (``preprocess.OPS``).

Determinism. The eval pipeline passes no per-example seed, so the randomness of an image comes
from the op's ``seed`` argument and a 64-bit fingerprint of the image itself (rounded to 8 bits,
so last-bit float differences of an earlier resize do not change it), folded with the
corruption's name. A corrupted test set is thus a fixed data set, like the published -C sets:
the same for every batch size, process count and position in the stream, bitwise equal eagerly
and in tf.data, and different images get independent noise. Identical images get identical
noise. The severity is not part of the seed, so one image sees the same noise field at every
severity, only scaled (shot noise aside: Poisson counts): its change grows with the severity. The op is marked deterministic
(``random=False``); it belongs in pp_eval, where it is applied to every pass alike.

Parameters are CIFAR-10-C's (Hendrycks & Dietterich, 2019), which were chosen for 32 px images;
rotate follows MNIST-C (Mu & Gilmer, 2019). Spatial parameters (blur width, elastic field,
pixelate block) are fractions of the shorter side, equal to the published pixel values at 32 px,
so they scale with the image whether the op comes before or after a resize. The per-pixel ones
(noise, contrast, brightness) do not: at 224 px, CIFAR-10-C's noise is milder than ImageNet-C's.

  gaussian_noise  x + N(0, σ²), σ = (0.04, 0.06, 0.08, 0.09, 0.10) · 255
  shot_noise      Poisson(x/255 · λ) / λ · 255, λ = (500, 250, 100, 75, 50)
  gaussian_blur   Gaussian filter, σ = (0.4, 0.6, 0.7, 0.8, 1.0) · side/32, symmetric padding
  contrast        (x - mean) · c + mean (per channel), c = (0.75, 0.5, 0.4, 0.3, 0.15)
  brightness      HSV value + b (clipped), b = (0.05, 0.1, 0.15, 0.2, 0.3) · 255
  pixelate        area-downsample to side · (0.95, 0.9, 0.85, 0.75, 0.65), nearest upsample
  rotate          ± (0.2, 0.4, 0.6, 0.8, 1.0) rad about the centre (sign random), bilinear, 0 fill
  elastic         a smooth random displacement field (σ = side/8), RMS length
                  (0.015, 0.025, 0.035, 0.05, 0.065) · side, bilinear, edge fill (Simard et al.)

Elastic deviates from CIFAR-10-C's elastic_transform, whose severities mix an affine jitter with
a displacement field and are not ordered by strength; here the field alone, normalised to a set
RMS length, so that severity orders the strength.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence
import zlib

import tensorflow as tf

__all__ = ["CORRUPTIONS", "RANDOM", "SEVERITIES", "check_args", "corrupt", "shifted_pp"]

SEVERITIES = (1, 2, 3, 4, 5)

_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
_SHOT_RATE = (500.0, 250.0, 100.0, 75.0, 50.0)
_BLUR_SIGMA_32 = (0.4, 0.6, 0.7, 0.8, 1.0)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
_BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
_PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
_ROTATE_RAD = (0.2, 0.4, 0.6, 0.8, 1.0)
_ELASTIC_RMS = (0.015, 0.025, 0.035, 0.05, 0.065)
_ELASTIC_SMOOTH = 1 / 8  # σ of the field's smoothing, a fraction of the shorter side (4 px at 32).


# --- helpers ---


def _side(x: tf.Tensor) -> tf.Tensor:
  """The shorter side as float32 (dynamic: works before a fixed-size op, too)."""
  shape = tf.shape(x)
  return tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)


def _gaussian_filter(x: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
  """Separable Gaussian filter of [H, W, C] with a (dynamic) σ in pixels, truncated at 3σ.

  Padding is 'SYMMETRIC' (edge pixel repeated: scipy's 'reflect', as skimage uses). Each channel
  is filtered alone, as [C, H, W, 1], so any channel count works.
  """
  radius = tf.maximum(tf.cast(tf.math.ceil(3.0 * sigma), tf.int32), 1)
  shape = tf.shape(x)
  # SYMMETRIC padding must not exceed the size; only reachable for images a few pixels wide.
  radius = tf.minimum(radius, tf.minimum(shape[0], shape[1]))
  t = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  k = tf.exp(-0.5 * tf.square(t / sigma))
  k = k / tf.reduce_sum(k)
  planes = tf.transpose(x, [2, 0, 1])[..., None]
  planes = tf.pad(planes, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
  planes = tf.nn.conv2d(planes, tf.reshape(k, [-1, 1, 1, 1]), strides=1, padding="VALID")
  planes = tf.nn.conv2d(planes, tf.reshape(k, [1, -1, 1, 1]), strides=1, padding="VALID")
  return tf.transpose(planes[..., 0], [1, 2, 0])


def _sample(x: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor, *, edge: bool) -> tf.Tensor:
  """Bilinear lookup of [H, W, C] at float coordinates [H, W]; outside: edge pixel or 0."""
  shape = tf.shape(x)
  h, w = shape[0], shape[1]
  y0, x0 = tf.floor(ys), tf.floor(xs)
  wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
  y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)

  def tap(yi, xi):
    value = tf.gather_nd(x, tf.stack([tf.clip_by_value(yi, 0, h - 1),
                                      tf.clip_by_value(xi, 0, w - 1)], axis=-1))
    if edge:
      return value
    inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
    return value * tf.cast(inside, x.dtype)[..., None]

  return ((1 - wy) * ((1 - wx) * tap(y0, x0) + wx * tap(y0, x0 + 1))
          + wy * ((1 - wx) * tap(y0 + 1, x0) + wx * tap(y0 + 1, x0 + 1)))


def _grid(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  shape = tf.shape(x)
  ys, xs = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing="ij")
  return tf.cast(ys, tf.float32), tf.cast(xs, tf.float32)


# --- the corruptions: fn(x in [0, 255] float32, severity index 0..4, stateless seed [2]) ---


def _gaussian_noise(x, s, seed):
  return x + tf.random.stateless_normal(tf.shape(x), seed) * (_NOISE_STD[s] * 255.0)


def _shot_noise(x, s, seed):
  # Poisson counts are integers, so the noise of one image is not a scaled copy across
  # severities; its expected size still grows as the rate falls.
  rate = _SHOT_RATE[s]
  counts = tf.random.stateless_poisson(tf.shape(x), seed, x / 255.0 * rate, dtype=tf.float32)
  return counts / rate * 255.0


def _gaussian_blur(x, s, seed):
  del seed
  return _gaussian_filter(x, _BLUR_SIGMA_32[s] / 32.0 * _side(x))


def _contrast(x, s, seed):
  del seed
  mean = tf.reduce_mean(x, axis=[0, 1], keepdims=True)
  return (x - mean) * _CONTRAST[s] + mean


def _brightness(x, s, seed):
  del seed
  # In HSV, RGB = V · f(H, S): raising V to V' scales all channels by V'/V, and a black pixel
  # (V = 0, S = 0) becomes grey V'. Computed that way it needs no colour-space round trip and
  # works for any channel count (for one channel V is the pixel itself).
  v = tf.reduce_max(x, axis=-1, keepdims=True)
  v_new = tf.minimum(v + _BRIGHTNESS[s] * 255.0, 255.0)
  return tf.where(v > 0, x * (v_new / tf.maximum(v, 1e-12)), v_new)


def _pixelate(x, s, seed):
  del seed
  shape = tf.shape(x)
  small = tf.maximum(tf.cast(tf.cast(shape[:2], tf.float32) * _PIXELATE[s], tf.int32), 1)
  down = tf.image.resize(x, small, method="area")
  return tf.image.resize(down, shape[:2], method="nearest")


def _rotate(x, s, seed):
  sign = tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)
  angle = sign * _ROTATE_RAD[s]
  ys, xs = _grid(x)
  shape = tf.cast(tf.shape(x), tf.float32)
  cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
  # Inverse map: the output pixel p shows the input at R(-angle)(p - c) + c.
  cos, sin = tf.cos(angle), tf.sin(angle)
  src_y = cos * (ys - cy) - sin * (xs - cx) + cy
  src_x = sin * (ys - cy) + cos * (xs - cx) + cx
  return _sample(x, src_y, src_x, edge=False)


def _elastic(x, s, seed):
  side = _side(x)
  shape = tf.shape(x)
  field = tf.random.stateless_uniform(tf.stack([shape[0], shape[1], 2]), seed, -1.0, 1.0)
  field = _gaussian_filter(field, _ELASTIC_SMOOTH * side)
  # Normalised to unit RMS length, so the severity alone sets the size of the displacement.
  rms = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(field), axis=-1)))
  field = field / tf.maximum(rms, 1e-12) * (_ELASTIC_RMS[s] * side)
  ys, xs = _grid(x)
  return _sample(x, ys + field[..., 0], xs + field[..., 1], edge=True)


_FNS: dict[str, Callable[[tf.Tensor, int, tf.Tensor], tf.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "rotate": _rotate,
    "elastic": _elastic,
}
CORRUPTIONS = tuple(_FNS)
# Those whose output depends on the seed (the others are fixed functions of the image).
RANDOM = ("gaussian_noise", "shot_noise", "rotate", "elastic")


def check_args(name: Any, severity: Any, seed: Any, in_max: Any) -> None:
  """ValueError naming the first bad argument of a corruption (the pp op 'corrupt' checks these)."""
  if name not in _FNS:
    raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
  if (not isinstance(severity, numbers.Integral) or isinstance(severity, bool)
      or severity not in SEVERITIES):
    raise ValueError(f"corruption {name!r}: severity must be an int in 1..5, got {severity!r}")
  if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
    raise ValueError(f"corruption {name!r}: seed must be an int, got {seed!r}")
  if (not isinstance(in_max, numbers.Real) or isinstance(in_max, bool) or not in_max > 0
      or not math.isfinite(in_max)):
    raise ValueError(f"corruption {name!r}: in_max must be a number > 0, got {in_max!r}")


def _image_seed(x255: tf.Tensor, name: str, seed: int) -> tf.Tensor:
  """[2] int64: (seed, fingerprint of the 8-bit image) folded with the corruption's name."""
  pixels = tf.cast(tf.round(tf.clip_by_value(x255, 0.0, 255.0)), tf.uint8)
  fingerprint = tf.fingerprint(tf.reshape(pixels, [1, -1]))  # [1, 8] uint8, farmhash64
  content = tf.bitcast(fingerprint[0], tf.int64)
  base = tf.stack([tf.constant(seed, tf.int64), content])
  # crc32 rather than hash(): Python's str hash changes from process to process.
  return tf.random.experimental.stateless_fold_in(base, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def corrupt(image: Any, name: str, severity: int, *, seed: int = 0,
            in_max: float = 255.0) -> tf.Tensor:
  """Corrupts one image [H, W, C] with values in [0, in_max]: float32, same shape, clipped.

  Deterministic in (image, name, severity, seed); see the module docstring. Raises ValueError
  naming an unknown corruption or a bad severity.
  """
  check_args(name, severity, seed, in_max)
  x = tf.cast(tf.convert_to_tensor(image), tf.float32)
  if x.shape.rank is not None and x.shape.rank != 3:
    raise ValueError(f"corruption {name!r}: expected an image [H, W, C], got shape {x.shape}")
  scale = 255.0 / float(in_max)
  x255 = x * scale if scale != 1.0 else x
  out = _FNS[name](x255, severity - 1, _image_seed(x255, name, int(seed)))
  out = tf.clip_by_value(out, 0.0, 255.0)
  if scale != 1.0:
    out = tf.clip_by_value(out / scale, 0.0, float(in_max))
  out.set_shape(x.shape)
  return out


# Ops that turn raw pixels into model inputs: the corruption goes before the first of them.
_VALUE_OPS = ("normalize", "value_range")
# Channel conversions just before that point: the corruption goes before them as well, so that
# the noise of a grey image stays grey (as in MNIST-C) rather than tinting each copied channel.
_CHANNEL_OPS = ("grayscale_to_rgb", "rgb_to_grayscale")


def _op_name(spec: Any) -> Any:
  if isinstance(spec, str):
    return spec
  if hasattr(spec, "items"):
    return dict(spec.items()).get("op")
  return None


def shifted_pp(pp_eval: Sequence[Any], name: str, severity: int, seed: int = 0) -> list:
  """``pp_eval`` with the corruption inserted at the raw-pixel stage, before normalisation.

  The corruption goes right before the first 'normalize' / 'value_range' op (and before any
  channel conversion directly preceding it), i.e. after decoding, resizing and cropping; at the
  end if there is no such op. Its ``in_max`` is read from that op (default 255). The input list
  is not changed; the inserted op's arguments are checked (``check_args``), the others are the
  caller's pp. ValueError for an unknown corruption, a bad severity, a pp that is already corrupted,
  or a value_range with in_min != 0.
  """
  check_args(name, severity, seed, 255.0)
  if isinstance(pp_eval, (str, bytes)) or not isinstance(pp_eval, (list, tuple)):
    raise ValueError(f"shifted_pp: expected a list of op specs, got {pp_eval!r}")
  names = [_op_name(spec) for spec in pp_eval]
  if "corrupt" in names:
    raise ValueError(f"shifted_pp: pp_eval already has a 'corrupt' op: {list(pp_eval)!r}")
  at = next((i for i, n in enumerate(names) if n in _VALUE_OPS), len(names))
  in_max = 255.0
  if at < len(names):
    spec = pp_eval[at]
    args = dict(spec.items()) if hasattr(spec, "items") else {}
    in_max = float(args.get("in_max", 255.0))
    if names[at] == "value_range" and float(args.get("in_min", 0.0)) != 0.0:
      raise ValueError(f"shifted_pp: the pixels before {spec!r} are not in [0, in_max]; "
                       "corruptions need in_min = 0")
  while at > 0 and names[at - 1] in _CHANNEL_OPS:
    at -= 1
  op = {"op": "corrupt", "name": name, "severity": int(severity), "seed": int(seed),
        "in_max": in_max}
  check_args(name, severity, seed, in_max)
  return list(pp_eval[:at]) + [op] + list(pp_eval[at:])
