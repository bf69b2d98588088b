"""Predict image classes with a finished (or running) training run.

    python -m jtransfer.predict --workdir=workdirs/run --images=photos/ [--top_k=5] [--out=preds.csv]
    python -m jtransfer.predict --workdir=workdirs/run --images=a.png,b.jpg --checkpoint=latest
    python -m jtransfer.predict --workdir=weights/efficientnet_lite0 --images=photos/   # ImageNet names

Loads the run's config (``config.json``), class names and weights — ``export`` (the params the run
exported: its best checkpoint by default) or ``latest`` (the newest checkpoint under
``checkpoints/``) — applies the run's eval preprocessing, and writes a CSV with one row per image:
file, the top-k class names and their probabilities. Unreadable images are reported by name on
stderr and in the CSV's ``error`` column; the others are still predicted.

    from jtransfer import predict
    rows = predict.predict_files(workdir, ["a.png"], top_k=3)
"""

from __future__ import annotations

# torch and torchvision (ImageNet class names of a 1000-class head) crash when imported after
# TensorFlow in one process; importing them first, as tests/conftest.py does, avoids it.
try:
  import torch  # noqa: F401, I001
  import torchvision  # noqa: F401
except ImportError:  # without them only a 1000-class head's ImageNet names are missing
  pass

import csv
import io
import os
import sys
from typing import Sequence

from absl import app, flags
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from jtransfer import data, models, weights
from jtransfer import workdir as wd
from jtransfer.cpu import hostmem

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


def list_images(spec: str) -> list[str]:
  """Comma-separated files and/or folders (searched recursively for image files), sorted."""
  files = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    if os.path.isdir(item):
      for root, _, names in os.walk(item):
        files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.exists(item):
      files.append(item)
    else:
      raise FileNotFoundError(f"--images: no such file or folder: {item}")
  return sorted(files)


def _latest_checkpoint_variables(workdir: str) -> dict:
  """``{'params', 'batch_stats'}`` of the newest checkpoint Orbax finds under the run's
  ``checkpoints/`` (a save that a kill left unfinished is not one)."""
  rd = wd.RunDir(workdir)
  latest = rd.latest_state()
  if latest is None:
    raise FileNotFoundError(f"No checkpoints under {rd.checkpoints}")
  _, state = latest
  return {"params": state["params"], "batch_stats": state["batch_stats"]}


def _data_config(run_data: dict | None, arch: str, image_size: int):
  """The eval data config of a run (its ``config.json`` data section), or for a bare weights dir
  the default ImageNet-style pipeline at ``image_size``; normalisation: the run's, else the model
  family's."""
  data_cfg = data.get_config()
  with data_cfg.unlocked():
    if run_data is None:
      data_cfg.dataset, data_cfg.image_size = "imagenet2012", image_size
    for key, value in (run_data or {}).items():
      if key in data_cfg:
        data_cfg[key] = value
    if data_cfg.get("normalize") is None:
      data_cfg.normalize = dict(models.get_spec(arch).normalize)
  return data_cfg


def load_run(workdir: str, checkpoint: str = "export", *, image_size: int | None = None):
  """(model, variables, class_names, eval preprocessing) of a training run's workdir, or of a
  weights dir (``python -m jtransfer.convert``'s output: ``model.json`` + variables).

  A run's model is rebuilt from its ``config.json`` (``checkpoint='latest'`` works before any
  export exists) or, for ``export``, from the export's ``model.json``. A weights dir is
  preprocessed as ImageNet eval images at ``image_size`` (default: the side the arch's reference
  weights were trained at, ``ModelSpec.native_size``, else 224) with the family's normalisation; a
  1000-class head without names gets ImageNet's (``models.pretrained.imagenet_class_names``).
  """
  rd = wd.RunDir(workdir)
  recorded = rd.read_config()
  config = None if recorded is None else recorded.to_dict()
  if checkpoint == "latest":
    if config is None:
      raise FileNotFoundError(f"--checkpoint=latest needs a run's workdir; {workdir} has no config.json")
    variables = _latest_checkpoint_variables(workdir)
    head = variables["params"]["fc"]["bias"].shape[-1]
    names_file = os.path.join(workdir, data.info.CLASS_NAMES_FILE)
    names = data.load_class_names(workdir) if os.path.isfile(names_file) else []
    meta = models.meta(ml_collections.ConfigDict(config["model"]), num_classes=head,
                       class_names=names)
  elif checkpoint == "export":
    export = rd.export if config is not None else workdir
    meta = models.read_meta(export)
    if meta is None:
      raise FileNotFoundError(f"No exported model at {export} (is the run finished? "
                              "--checkpoint=latest predicts with its newest checkpoint)")
    variables = weights.load(export)
  else:
    raise ValueError(f"checkpoint must be 'export' or 'latest', got {checkpoint!r}")
  model = models.from_meta(meta, dtype=config["model"]["dtype"] if config else None)
  names = list(meta["class_names"])
  if not names and meta["num_classes"] == 1000:
    from jtransfer.models import pretrained  # pylint: disable=g-import-not-at-top
    names = pretrained.imagenet_class_names()
  names = names or [str(i) for i in range(meta["num_classes"])]
  if image_size is None:
    image_size = models.get_spec(meta["arch"]).native_size.get(meta["arch"], 224)
  data_cfg = _data_config(config["data"] if config else None, meta["arch"], image_size)
  pp = data.build_pp(data.resolve_pp(data_cfg, train=False), name="data.pp_eval")
  return model, variables, names, pp


def predict_files(workdir: str, files: Sequence[str], *, top_k: int = 5, checkpoint: str = "export",
                  batch_size: int = 64, image_size: int | None = None) -> list[dict]:
  """One dict per file: ``file``, ``top`` [(class name, probability)] or ``error``."""
  model, variables, names, pp = load_run(workdir, checkpoint, image_size=image_size)
  top_k = min(top_k, len(names))
  apply = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x)[0]))
  rows, images, ok = [], [], []
  for path in files:
    try:
      images.append(np.asarray(pp(tf.io.read_file(path))))
      ok.append(len(rows))
      rows.append({"file": path})
    except (tf.errors.OpError, ValueError) as e:
      msg = str(e).strip().splitlines()[0][:200]
      print(f"predict: cannot read {path}: {msg}", file=sys.stderr)
      rows.append({"file": path, "error": msg})
  for start in range(0, len(images), batch_size):
    chunk = np.stack(images[start:start + batch_size])
    n = len(chunk)
    if n < batch_size and len(images) > batch_size:  # keep one compiled shape
      chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)])
    probs = np.asarray(apply(variables, chunk))[:n]
    for i, p in zip(ok[start:start + n], probs):
      best = np.argsort(-p)[:top_k]
      rows[i]["top"] = [(names[j], float(p[j])) for j in best]
  return rows


def write_csv(rows: list[dict], path: str, top_k: int) -> None:
  """One row per image: file, (class, prob) × top_k, error; written atomically."""
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["file"] + [f"{k}{i + 1}" for i in range(top_k) for k in ("class", "prob")] + ["error"])
  for r in rows:
    cells = [x for name, p in r.get("top", []) for x in (name, f"{p:.6f}")]
    cells += [""] * (2 * top_k - len(cells))
    w.writerow([r["file"], *cells, r.get("error", "")])
  wd.atomic_write_text(path, buf.getvalue())


def main(argv):
  del argv
  hostmem.reuse_freed_memory()  # before JAX's threads start
  FLAGS = flags.FLAGS
  files = list_images(FLAGS.images)
  rows = predict_files(FLAGS.workdir, files, top_k=FLAGS.top_k, checkpoint=FLAGS.checkpoint,
                       image_size=FLAGS.image_size)
  out = FLAGS.out or os.path.join(FLAGS.workdir, "predictions.csv")
  top_k = min(FLAGS.top_k, max((len(r.get("top", [])) for r in rows), default=0)) or FLAGS.top_k
  write_csv(rows, out, top_k)
  bad = sum("error" in r for r in rows)
  for r in rows:
    if "top" in r:
      print(f"{r['file']}: " + ", ".join(f"{name} ({p:.3f})" for name, p in r["top"]))
  print(f"wrote {out}: {len(rows) - bad} predicted, {bad} unreadable")


def cli():
  """The command line; flags are defined here, not at import, so importing this module is free."""
  flags.DEFINE_string("workdir", None, "A training run's workdir, or a weights dir written by "
                      "jtransfer-convert (model.json + variables).")
  flags.DEFINE_integer("image_size", None, "A weights dir's input side (default: the side its "
                       "arch's weights were trained at, e.g. 240 for Lite1, else 224; a run uses "
                       "its own config).")
  flags.DEFINE_string("images", None, "Comma-separated image files and/or folders.")
  flags.DEFINE_integer("top_k", 5, "Classes per image.")
  flags.DEFINE_string("out", None, "CSV to write; default WORKDIR/predictions.csv.")
  flags.DEFINE_enum("checkpoint", "export", ["export", "latest"],
                    "export: the params the run exported (its best checkpoint by default); "
                    "latest: the newest checkpoint.")
  flags.mark_flags_as_required(["workdir", "images"])
  app.run(main)


if __name__ == "__main__":
  cli()
