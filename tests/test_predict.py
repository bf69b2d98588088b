"""predict: a finished run's export + eval preprocessing → a CSV; unreadable files named, rest predicted."""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from jtransfer import predict
from jtransfer.train import config as train_config
from jtransfer.train import trainer

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _png(path, colour, rng):
  img = np.clip(np.array(colour)[None, None] + rng.integers(-40, 40, (8, 8, 3)), 0, 255).astype(np.uint8)
  tf.io.write_file(str(path), tf.io.encode_png(img))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("colours")
  rng = np.random.default_rng(0)
  for split, n in (("train", 8), ("test", 3)):
    for name, colour in COLOURS.items():
      os.makedirs(root / split / name)
      for i in range(n):
        _png(root / split / name / f"{i}.png", colour, rng)
  c = train_config.get_base_config()
  c.model.small_stem, c.model.base_planes = True, 8
  c.data.dataset = f"folder:{root}"
  c.data.image_size = 8
  c.data.batch_size, c.data.eval_batch_size = 8, 9
  c.optim.lr, c.optim.warmup_steps = 1e-2, 0
  c.train.num_steps, c.train.eval_every, c.train.ckpt_every = 30, 0, 0
  c.train.tensorboard = c.train.progress = False
  workdir = str(tmp_path_factory.mktemp("run"))
  result = trainer.train_and_evaluate(c, workdir)
  return root, workdir, result


def test_predicts_every_readable_file_and_names_the_bad_one(run, tmp_path):
  root, workdir, result = run
  bad = tmp_path / "broken.png"
  bad.write_bytes(b"not a png at all")
  files = predict.list_images(f"{root / 'test'},{bad}")
  assert len(files) == 10
  rows = predict.predict_files(workdir, files, top_k=2)
  good = [r for r in rows if "error" not in r]
  assert [r["file"] for r in rows if "error" in r] == [str(bad)]
  assert len(good) == 9
  for r in good:
    (c1, p1), (c2, p2) = r["top"]
    assert {c1, c2} <= set(COLOURS) and 1.0 >= p1 >= p2 >= 0.0
  # Same predictions as the run's own evaluation on the same (test) images.
  correct = np.mean([r["top"][0][0] == os.path.basename(os.path.dirname(r["file"])) for r in good])
  np.testing.assert_allclose(correct, result["eval"]["top1"], atol=1e-6)


def test_cli_writes_csv(run, tmp_path):
  root, workdir, _ = run
  bad = tmp_path / "x.jpg"
  bad.write_bytes(b"\xff\xd8garbage")
  out = tmp_path / "p.csv"
  proc = subprocess.run([sys.executable, "-m", "jtransfer.predict", f"--workdir={workdir}",
                         f"--images={root / 'test' / 'red'},{bad}", "--top_k=3", f"--out={out}"],
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert f"cannot read {bad}" in proc.stderr
  rows = list(csv.DictReader(open(out)))
  assert [r["file"] for r in rows][-1] == str(bad) and rows[-1]["error"]
  assert len(rows) == 4 and all(r["class3"] for r in rows[:3])
  assert all(abs(sum(float(r[f"prob{i}"]) for i in (1, 2, 3)) - 1) < 1e-4 for r in rows[:3])


def test_latest_checkpoint_option(run):
  root, workdir, _ = run
  rows = predict.predict_files(workdir, predict.list_images(str(root / "test" / "blue")),
                               checkpoint="latest", top_k=1)
  assert len(rows) == 3 and all("top" in r for r in rows)


def test_latest_works_before_any_export(run, tmp_path):
  """A running run has checkpoints but no export yet: the model comes from config.json."""
  root, workdir, _ = run
  early = tmp_path / "early"
  shutil.copytree(workdir, early, symlinks=True)
  for name in os.listdir(early):
    if name == "export" or name.startswith(".export-") or name == "result.json":
      path = early / name
      path.unlink() if path.is_symlink() or path.is_file() else shutil.rmtree(path)
  with pytest.raises(FileNotFoundError, match="--checkpoint=latest"):
    predict.predict_files(str(early), [str(root / "test" / "red" / "0.png")])
  rows = predict.predict_files(str(early), predict.list_images(str(root / "test" / "red")),
                               checkpoint="latest", top_k=1)
  assert [r["top"][0][0] for r in rows] == [
      r["top"][0][0] for r in predict.predict_files(workdir, predict.list_images(
          str(root / "test" / "red")), checkpoint="latest", top_k=1)]
