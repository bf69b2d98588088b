"""Mixup (Zhang et al. 2018) on a batch, as a stateless tf op.

    batch = mixup(batch, seed=[0, step], alpha=0.2, num_classes=10)
    # batch['image'] = lam * image + (1 - lam) * image[::-1]
    # batch['soft_label'] = lam * one_hot(label) + (1 - lam) * one_hot(label[::-1])

One `lam ~ Beta(alpha, alpha)` per batch; each example is mixed with its mirror in the
batch. 'label' is left as it is; train on 'soft_label' when it is present.
"""
import tensorflow as tf


def sample_beta(seed, alpha):
  """A stateless Beta(alpha, alpha) sample."""
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
  a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
  b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
  return a / (a + b)


def mixup(batch, *, seed, alpha, num_classes):
  """Returns `batch` with 'image' mixed and a float32 'soft_label' [B, num_classes]."""
  if alpha <= 0:
    raise ValueError(f'mixup alpha must be > 0, got {alpha}')
  lam = sample_beta(seed, alpha)
  image = tf.cast(batch['image'], tf.float32)
  one_hot = tf.one_hot(batch['label'], num_classes, dtype=tf.float32)
  return {
      **batch,
      'image': lam * image + (1.0 - lam) * tf.reverse(image, axis=[0]),
      'soft_label': lam * one_hot + (1.0 - lam) * tf.reverse(one_hot, axis=[0]),
  }
