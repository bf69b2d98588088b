"""Aggregation over seeds, the Markdown/CSV tables and the plot."""

import csv
import os

import numpy as np

from jtransfer.benchmark import report


def _rows():
  rows = []
  for variant, base in (("scratch", 0.3), ("full_finetune", 0.8)):
    for shots in (1, 5, "all"):
      for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
        rows.append({"dataset": "uci_digits", "variant": variant, "shots": shots, "seed": seed,
                     "accuracy": base + jitter + (0.1 if shots == "all" else 0), "wall_s": 2.0})
  return rows


def test_aggregate_mean_and_sample_std():
  table = report.aggregate(_rows())
  r = next(t for t in table if t["variant"] == "scratch" and t["shots"] == 1)
  assert r["seeds"] == 3
  np.testing.assert_allclose(r["acc_mean"], 30.0)
  np.testing.assert_allclose(r["acc_std"], np.std([29, 30, 31], ddof=1))
  assert [t["shots"] for t in table if t["variant"] == "scratch"] == [1, 5, "all"]


def test_write_all_outputs(tmp_path):
  report.write_all(_rows(), str(tmp_path), variant_order=["scratch", "full_finetune"])
  md = (tmp_path / "results.md").read_text()
  assert "| scratch | 30.0 ± 1.0 (2.0 s) |" in md and "all/class" in md
  assert md.index("| scratch") < md.index("| full_finetune")
  with open(tmp_path / "results.csv") as f:
    assert len(list(csv.DictReader(f))) == 6
  assert os.path.getsize(tmp_path / "results.png") > 10_000
