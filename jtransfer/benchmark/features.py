"""Frozen-backbone features, extracted once per (weights, dataset, split) and cached on disk.

    cache = FeatureCache("workdirs/demo/features")
    x, y = cache.get(model_cfg, data_cfg, split="train")   # [N, D] pre_logits, [N] labels

Train features are extracted for the whole split (no few-shot selection, eval preprocessing);
few-shot subsets are then picked with ``data.sample_per_class`` on the same split order, exactly
the examples the training pipeline would use for that ``shots`` and seed. ``image_arrays`` is
the same read without a backbone (the images themselves, for kinds that train on them).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile

import jax
from ml_collections import config_dict
import numpy as np

from jtransfer import data, models, weights


def _key(model_cfg, data_cfg, split: str) -> str:
  desc = {"dataset": data_cfg.dataset, "split": split,
          "pp": data.resolve_pp(data_cfg, train=False), "data_dir": data_cfg.data_dir}
  if model_cfg is None:  # the identity: pixels
    desc["arch"] = "pixels"
  else:
    init = os.path.abspath(model_cfg.init)
    stamp = os.path.getmtime(init) if os.path.exists(init) else None
    desc.update(init=init, stamp=stamp, arch=model_cfg.arch, options=models.options_of(model_cfg))
  return hashlib.sha1(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def extract(model_cfg, data_cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
  """``pre_logits`` of every example of ``split`` (in split order), with the eval preprocessing;
  ``model_cfg=None``: the identity, each image flattened to ``[H·W·C]`` (pixel baselines)."""
  if model_cfg is None:
    images, labels = zip(*data.split_examples(data_cfg, split))
    x = np.concatenate(images)
    return x.reshape(len(x), -1).astype(np.float32), np.concatenate(labels)
  if not model_cfg.init:
    raise ValueError("Feature extraction needs pretrained weights: model.init is empty")
  model = models.from_config(model_cfg, num_classes=None)  # no head: flax ignores its weights
  variables = weights.load(model_cfg.init, arch=model_cfg.arch)
  apply = jax.jit(lambda v, x: model.apply(v, x)[1]["pre_logits"].astype("float32"))
  feats, labels = [], []
  for images, y in data.split_examples(data_cfg, split):
    feats.append(np.asarray(apply(variables, images)))
    labels.append(y)
  return np.concatenate(feats), np.concatenate(labels)


def image_arrays(data_cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Every example of ``split`` in split order, eval-preprocessed: ``(images, labels)``; read
  once per (data config, split) and process (every seed and variant of a dataset reads the same
  pool). The arrays are shared: do not write to them."""
  return _image_arrays(data_cfg.to_json_best_effort(sort_keys=True), split)


@functools.lru_cache(maxsize=8)
def _image_arrays(data_cfg_json: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  examples = list(data.split_examples(config_dict.ConfigDict(json.loads(data_cfg_json)), split))
  x = np.concatenate([e[0] for e in examples])
  y = np.concatenate([e[1] for e in examples])
  x.flags.writeable = y.flags.writeable = False
  return x, y


class FeatureCache:
  """``.npz`` files keyed by weights (path and mtime), model options, dataset, split and pp;
  ``get(None, ...)`` caches the flattened pixels (``extract``'s identity) the same way."""

  def __init__(self, directory: str):
    self.directory = directory
    self.extractions = 0  # how many times a split was actually read (tests check reuse)

  def get(self, model_cfg, data_cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = os.path.join(self.directory, f"{data_cfg.dataset}-{split}-{_key(model_cfg, data_cfg, split)}.npz")
    if os.path.exists(path):
      with np.load(path) as f:
        return f["x"], f["y"]
    x, y = extract(model_cfg, data_cfg, split)
    self.extractions += 1
    os.makedirs(self.directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=self.directory)
    with os.fdopen(fd, "wb") as f:
      np.savez(f, x=x, y=y)
    os.replace(tmp, path)
    return x, y
