"""Progress line with a fake clock (no sleeps), JSON lines, TensorBoard events."""

import glob
import io

from jtransfer.train import writers


def test_progress_line_is_exact_with_a_fake_clock():
  out = io.StringIO()
  p = writers.Progress(total_steps=100, batch_size=32, stream=out)
  p.start(step=0, now=1000.0)
  assert p.update(step=10, now=1010.0) == "10/100 [ 10%] 32.0 img/s ETA 0:01:30"
  # The rate is measured since the last update only: a slow first (compiling) step is forgotten.
  assert p.update(step=60, now=1020.0) == "60/100 [ 60%] 160.0 img/s ETA 0:00:08"
  assert out.getvalue().splitlines() == ["10/100 [ 10%] 32.0 img/s ETA 0:01:30",
                                         "60/100 [ 60%] 160.0 img/s ETA 0:00:08"]


def test_progress_before_any_rate_and_disabled():
  out = io.StringIO()
  p = writers.Progress(total_steps=5, batch_size=4, stream=out, enabled=False)
  assert p.update(step=0, now=0.0) == "0/5 [  0%] nan img/s ETA ?"
  assert out.getvalue() == ""
  assert writers.format_duration(3725.4) == "1:02:05"


def test_jsonl_and_tensorboard(tmp_path):
  w = writers.MetricWriter(str(tmp_path), tensorboard=True)
  w.write(3, {"train/loss": 0.5, "eval/confusion_matrix": [[1, 0], [0, 1]],
              "eval/auc_roc": float("nan")})
  w.write(4, {"train/loss": 0.25})
  w.close()
  lines = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert lines[0] == {"step": 3, "train/loss": 0.5, "eval/confusion_matrix": [[1, 0], [0, 1]],
                      "eval/auc_roc": "nan"}
  assert lines[1] == {"step": 4, "train/loss": 0.25}
  events = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert len(events) == 1
  import tensorflow as tf
  tags = {(e.step, v.tag) for e in tf.compat.v1.train.summary_iterator(events[0])
          for v in e.summary.value}
  assert {(3, "train/loss"), (4, "train/loss"), (3, "eval/auc_roc")} <= tags
  assert not any(t == "eval/confusion_matrix" for _, t in tags)


def test_disabled_writer_writes_nothing(tmp_path):
  w = writers.MetricWriter(str(tmp_path / "x"), enabled=False)
  w.write(1, {"a": 1.0})
  assert not (tmp_path / "x").exists()
