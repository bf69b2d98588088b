"""Predict image classes with a finished (or running) training run.

    python -m jtransfer.predict --workdir=workdirs/run --images=photos/ [--top_k=5] [--out=preds.csv]
    python -m jtransfer.predict --workdir=workdirs/run --images=a.png,b.jpg --checkpoint=latest

Loads the run's config (``config.json``), class names and weights — ``export`` (the params the run
exported: its best checkpoint by default) or ``latest`` (the newest checkpoint under
``checkpoints/``) — applies the run's eval preprocessing, and writes a CSV with one row per image:
file, the top-k class names and their probabilities. Unreadable images are reported by name on
stderr and in the CSV's ``error`` column; the others are still predicted.

    from jtransfer import predict
    rows = predict.predict_files(workdir, ["a.png"], top_k=3)
"""

from __future__ import annotations

import csv
import json
import os
import sys
from typing import Sequence

from absl import app, flags
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from jtransfer import data, models, weights

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
  """``{'params', 'batch_stats'}`` of the newest checkpoint under ``workdir/checkpoints``."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise FileNotFoundError(f"No checkpoints under {ckpt_dir}")
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(os.path.join(ckpt_dir, str(steps[-1]), "state"))
  return {"params": state["params"], "batch_stats": state["batch_stats"]}


def load_run(workdir: str, checkpoint: str = "export"):
  """(model, variables, class_names, eval preprocessing) of a training run's workdir.

  The model is rebuilt from the run's ``config.json`` (``checkpoint='latest'`` works before any
  export exists) or, for ``export``, from the export's ``model.json``.
  """
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  if checkpoint == "export":
    export = os.path.join(workdir, "export")
    meta = models.read_meta(export)
    if meta is None:
      raise FileNotFoundError(f"No exported model at {export} (is the run finished? "
                              "--checkpoint=latest predicts with its newest checkpoint)")
    variables = weights.load(export)
  elif checkpoint == "latest":
    variables = _latest_checkpoint_variables(workdir)
    head = variables["params"]["fc"]["bias"].shape[-1]
    model_cfg = ml_collections.ConfigDict(config["model"])
    names = data.load_class_names(workdir) if os.path.isfile(
        os.path.join(workdir, data.info.CLASS_NAMES_FILE)) else [str(i) for i in range(head)]
    meta = models.meta(model_cfg, num_classes=head, class_names=names)
  else:
    raise ValueError(f"checkpoint must be 'export' or 'latest', got {checkpoint!r}")
  model = models.from_meta(meta, dtype=config["model"]["dtype"])
  names = list(meta["class_names"]) or [str(i) for i in range(meta["num_classes"])]
  data_cfg = data.get_config()
  with data_cfg.unlocked():
    for key, value in config["data"].items():
      if key in data_cfg:
        data_cfg[key] = value
  pp = data.build_pp(data.resolve_pp(data_cfg, train=False), name="data.pp_eval")
  return model, variables, names, pp


def predict_files(workdir: str, files: Sequence[str], *, top_k: int = 5, checkpoint: str = "export",
                  batch_size: int = 64) -> list[dict]:
  """One dict per file: ``file``, ``top`` [(class name, probability)] or ``error``."""
  model, variables, names, pp = load_run(workdir, checkpoint)
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
  header = ["file"] + [f"{k}{i + 1}" for i in range(top_k) for k in ("class", "prob")] + ["error"]
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for r in rows:
      top = r.get("top", [])
      cells = [x for name, p in top for x in (name, f"{p:.6f}")]
      cells += [""] * (2 * top_k - len(cells))
      w.writerow([r["file"], *cells, r.get("error", "")])
  os.replace(tmp, path)


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  files = list_images(FLAGS.images)
  rows = predict_files(FLAGS.workdir, files, top_k=FLAGS.top_k, checkpoint=FLAGS.checkpoint)
  out = FLAGS.out or os.path.join(FLAGS.workdir, "predictions.csv")
  top_k = min(FLAGS.top_k, max((len(r.get("top", [])) for r in rows), default=0)) or FLAGS.top_k
  write_csv(rows, out, top_k)
  bad = sum("error" in r for r in rows)
  print(f"wrote {out}: {len(rows) - bad} predicted, {bad} unreadable")


def cli():
  """The command line; flags are defined here, not at import, so importing this module is free."""
  flags.DEFINE_string("workdir", None, "The training run's workdir.")
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
