"""Fashion-MNIST from idx files: a hand-written set reads whole through the TFDS builder, a
truncated or mislabelled file is an error naming it, a missing folder says how to get the files,
and the installed Debian files have the published sizes."""

import gzip
import os

import numpy as np
import pytest

from jtransfer.data import datasets
from jtransfer.data.datasets import fashion_mnist


def _write_idx(path, array, magic):
  header = magic.to_bytes(4, "big")  # idx: 0, 0, type 0x08 (uint8), ndim
  assert header[2:] == bytes([8, array.ndim])
  dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + dims + array.astype(np.uint8).tobytes())


def _fake_set(folder, n_train=6, n_test=4):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    imgs, lbls = fashion_mnist.FILES[split]
    _write_idx(os.path.join(folder, imgs), images, 2051)
    _write_idx(os.path.join(folder, lbls), labels, 2049)
    out[split] = (images, labels)
  return out


def test_a_hand_written_set_reads_whole_through_the_builder(tmp_path, monkeypatch):
  expected = _fake_set(tmp_path / "files")
  monkeypatch.setenv(fashion_mnist.ENV, str(tmp_path / "files"))
  builder = datasets.get_builder("fashion_mnist", data_dir=str(tmp_path / "tfds"))
  assert builder.name == "fashion_mnist_offline"  # Not TFDS's own 'fashion_mnist'.
  assert builder.info.splits["train"].num_examples == 6
  assert builder.info.features["label"].names[9] == "Ankle boot"
  for split, (images, labels) in expected.items():
    got = list(datasets.as_dataset(builder, split, shuffle_files=False).as_numpy_iterator())
    # TFDS stores examples in the deterministic order of their keys' hashes: the same examples.
    key = lambda image, label: (int(label), image.tobytes())
    assert sorted(key(e["image"][..., 0], e["label"]) for e in got) == sorted(
        key(i, l) for i, l in zip(images, labels))


def test_a_truncated_or_wrong_file_is_an_error_naming_it(tmp_path):
  _fake_set(tmp_path)
  images_file = os.path.join(tmp_path, fashion_mnist.FILES["train"][0])
  with gzip.open(images_file, "rb") as f:
    raw = f.read()
  with gzip.open(images_file, "wb") as f:
    f.write(raw[:-100])
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*truncated"):
    fashion_mnist.load_split("train", str(tmp_path))
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: not an idx file of magic"):
    fashion_mnist.read_idx(os.path.join(tmp_path, fashion_mnist.FILES["test"][0]), 2049)
  with open(images_file, "wb") as f:
    f.write(b"not gzip")
  with pytest.raises(ValueError, match="not a readable gzip"):
    fashion_mnist.load_split("train", str(tmp_path))


def test_labels_that_do_not_match_the_images_are_refused(tmp_path):
  _fake_set(tmp_path, n_train=6)
  _write_idx(os.path.join(tmp_path, fashion_mnist.FILES["train"][1]), np.arange(5), 2049)
  with pytest.raises(ValueError, match="6 images.*5 labels"):
    fashion_mnist.load_split("train", str(tmp_path))


def test_a_missing_folder_says_how_to_get_the_files(tmp_path, monkeypatch):
  monkeypatch.setenv(fashion_mnist.ENV, str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*"
                                              "JTRANSFER_FASHION_MNIST_DIR"):
    fashion_mnist.load_split("test")
  with pytest.raises(FileNotFoundError, match="nowhere.*apt-get install dataset-fashion-mnist"):
    datasets.get_builder("fashion_mnist", data_dir=str(tmp_path / "tfds"))


def test_the_installed_files_have_the_published_sizes():
  """Parses the files in $JTRANSFER_FASHION_MNIST_DIR or Debian's dataset-fashion-mnist (make test
  installs it) without preparing them (0.4 s): fails, never skips, where they are missing."""
  for split, n in (("train", 60_000), ("test", 10_000)):
    images, labels = fashion_mnist.load_split(split)
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [n // 10] * 10
