"""JSON lines (torn last line tolerated) and TensorBoard events through CLU's writer."""

import glob

from jtransfer.train import writers


def test_torn_last_line_is_dropped(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "trai')  # killed mid-append
  assert writers.read_jsonl(str(path)) == [{"step": 1}, {"step": 2}]


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
