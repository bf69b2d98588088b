"""Preprocessing ops, each run eagerly and inside tf.data (they can differ)."""
import numpy as np
import pytest
import tensorflow as tf

from jtransfer import data
from jtransfer.data import preprocess


def _image(h=6, w=8, c=3):
  return (np.arange(h * w * c) % 251).astype(np.uint8).reshape(h, w, c)


def _both(spec, image, seed=(1, 2)):
  """Runs the pp eagerly and in tf.data; returns both outputs as numpy."""
  pp = data.build_pp(spec)
  eager = pp(image, seed=seed).numpy()
  ds = tf.data.Dataset.from_tensors({'image': image}).map(lambda ex: pp(ex, seed=seed))
  graph = next(iter(ds.as_numpy_iterator()))['image']
  return eager, graph


def _png(image):
  return tf.io.encode_png(image).numpy()


CASES = [
    ([{'op': 'corrupt', 'name': 'contrast', 'severity': 3}], _image(), (6, 8, 3)),
    (['decode'], _image(), (6, 8, 3)),
    ([{'op': 'resize', 'size': 4}], _image(), (4, 4, 3)),
    ([{'op': 'resize', 'size': [3, 5], 'method': 'nearest'}], _image(), (3, 5, 3)),
    ([{'op': 'resize_small', 'size': 3}], _image(), (3, 4, 3)),
    ([{'op': 'center_crop', 'size': 4}], _image(), (4, 4, 3)),
    ([{'op': 'center_crop', 'size': 10}], _image(), (10, 10, 3)),
    ([{'op': 'random_crop', 'size': 6, 'padding': 2}], _image(), (6, 6, 3)),
    ([{'op': 'inception_crop', 'size': 5}], _image(), (5, 5, 3)),
    (['flip_lr'], _image(), (6, 8, 3)),
    (['value_range'], _image(), (6, 8, 3)),
    (['normalize'], _image(), (6, 8, 3)),
    (['grayscale_to_rgb'], _image(c=1), (6, 8, 3)),
    (['rgb_to_grayscale'], _image(), (6, 8, 1)),
]


@pytest.mark.parametrize('spec,image,shape', CASES, ids=[str(c[0]) for c in CASES])
def test_op_eager_equals_tf_data(spec, image, shape):
  eager, graph = _both(spec, image)
  assert eager.shape == shape
  np.testing.assert_allclose(eager, graph, rtol=1e-6, atol=1e-5)


def test_decode_png_bytes_eager_and_in_tf_data():
  image = _image(c=1)
  eager, graph = _both([{'op': 'decode', 'channels': 3}], _png(image))
  assert eager.shape == (6, 8, 3) and eager.dtype == np.uint8
  np.testing.assert_array_equal(eager, np.repeat(image, 3, axis=-1))
  np.testing.assert_array_equal(graph, eager)


def test_values_match_torchvision_conventions():
  image = _image()
  x = data.build_pp(['normalize'])(image).numpy()
  expected = (image / 255.0 - np.array(data.IMAGENET_MEAN)) / np.array(data.IMAGENET_STD)
  np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
  x = data.build_pp([{'op': 'value_range', 'vmin': 0, 'vmax': 1, 'in_max': 16}])(
      np.full([2, 2, 1], 16, np.uint8)).numpy()
  np.testing.assert_allclose(x, 1.0)
  crop = data.build_pp([{'op': 'center_crop', 'size': [2, 4]}])(image).numpy()
  np.testing.assert_array_equal(crop, image[2:4, 2:6])  # torchvision's offsets.
  flipped = data.build_pp([{'op': 'flip_lr', 'p': 1.0}])(image).numpy()
  np.testing.assert_array_equal(flipped, image[:, ::-1])


def test_random_ops_depend_on_seed_only():
  pp = data.build_pp([{'op': 'inception_crop', 'size': 4}, 'flip_lr'])
  image = _image(16, 16)
  a, b = pp(image, seed=[3, 4]).numpy(), pp(image, seed=[3, 4]).numpy()
  np.testing.assert_array_equal(a, b)
  outs = {pp(image, seed=[3, i]).numpy().tobytes() for i in range(8)}
  assert len(outs) > 1


def test_deterministic_prefix_split_keeps_seeds():
  spec = ['decode', {'op': 'resize', 'size': 8}, {'op': 'random_crop', 'size': 6},
          'flip_lr', 'value_range']
  pp = data.build_pp(spec)
  fixed, rest = pp.split_deterministic_prefix()
  assert [op.name for op in fixed.ops] == ['decode', 'resize']
  image = _image()
  np.testing.assert_allclose(rest(fixed(image), seed=[5, 6]), pp(image, seed=[5, 6]))


def test_mixup_eager_and_in_tf_data():
  batch = {'image': np.stack([np.zeros([2, 2, 1]), np.ones([2, 2, 1])]).astype(np.float32),
           'label': np.array([0, 2], np.int32)}
  eager = data.mixup(batch, seed=[0, 1], alpha=0.4, num_classes=3)
  ds = tf.data.Dataset.from_tensors(batch).map(
      lambda b: data.mixup(b, seed=[0, 1], alpha=0.4, num_classes=3))
  graph = next(iter(ds.as_numpy_iterator()))
  lam = eager['soft_label'].numpy()[0, 0]
  assert 0 < lam < 1
  np.testing.assert_allclose(eager['soft_label'].numpy().sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(eager['image'].numpy()[0], 1 - lam, rtol=1e-5)
  np.testing.assert_allclose(graph['image'], eager['image'].numpy(), rtol=1e-6)
  np.testing.assert_array_equal(graph['label'], batch['label'])


@pytest.mark.parametrize('spec,match', [
    (['rezise'], r"pp\[0\]: unknown op 'rezise'"),
    ([{'op': 'resize', 'sise': 3}], r"pp\[0\] \(resize\): .*sise"),
    ([{'op': 'resize'}], r"pp\[0\] \(resize\): .*size"),
    (['decode', {'op': 'resize', 'size': -3}], r"pp\[1\] \(resize\): size must be"),
    ([{'op': 'resize', 'size': 3, 'method': 'cubic'}], r'method must be one of'),
    ([{'op': 'flip_lr', 'p': 2}], r'p must be in'),
    ([{'op': 'decode', 'channels': 2}], r'channels must be'),
    ([{'op': 'inception_crop', 'size': 4, 'area_min': 0}], r'area_min must be > 0'),
    ([{'op': 'value_range', 'in_min': 5, 'in_max': 1}], r'in_max .* must be >'),
    ([{'size': 3}], r'needs an "op" key'),
    ('decode', r'expected a list'),
])
def test_bad_specs_fail_when_built(spec, match):
  with pytest.raises(ValueError, match=match):
    data.build_pp(spec)


def test_every_op_has_a_case():
  tested = {c[0][-1] if isinstance(c[0][-1], str) else c[0][-1]['op'] for c in CASES}
  assert tested == set(preprocess.OPS)
