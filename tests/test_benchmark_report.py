"""Aggregation over seeds (intervals, spread), best marks, comparisons, the CSVs and the plots."""

import csv
import os

import numpy as np

from jtransfer.benchmark import report, stats


def _rows():
  rows = []
  for variant, base in (("scratch", 0.3), ("full_finetune", 0.8), ("lp_ft", 0.805)):
    for shots in (1, 5, "all"):
      jitters = (0.01, 0.0, -0.01) if variant == "lp_ft" else (-0.01, 0.0, 0.01)
      for seed, jitter in enumerate(jitters):
        acc = base + jitter + (0.1 if shots == "all" else 0)
        rows.append({"dataset": "uci_digits", "variant": variant, "shots": shots, "seed": seed,
                     "accuracy": acc, "test_top1": acc, "val_top1": acc - 0.02,
                     "wall_s": 2.0, "selection": "val", "budget": 2,
                     "chosen": {"optim.lr": 0.001}, "chosen_id": "optim.lr=0.001",
                     "ood": {"gaussian_noise-3": acc - 0.1, "contrast-3": acc - 0.2},
                     "ood_mean": acc - 0.15, "trainable_params": 1000, "train_gflops": 1.5,
                     "search_gflops": 3.0, "peak_bytes": 2**20})
  return rows


def test_aggregate_mean_interval_and_spread():
  table = report.aggregate(_rows())
  r = next(t for t in table if t["variant"] == "scratch" and t["shots"] == 1)
  assert r["seeds"] == 3
  np.testing.assert_allclose(r["acc_mean"], 30.0)
  np.testing.assert_allclose(r["acc_std"], np.std([29, 30, 31], ddof=1))
  np.testing.assert_allclose((r["acc_min"], r["acc_median"], r["acc_max"]), (29.0, 30.0, 31.0))
  low, high = stats.bootstrap_ci([29.0, 30.0, 31.0])
  np.testing.assert_allclose((r["acc_ci_low"], r["acc_ci_high"]), (low, high))
  np.testing.assert_allclose(r["ood_mean"], 15.0)
  assert r["chosen"] == {"optim.lr=0.001": 3} and r["budget"] == 2
  assert [t["shots"] for t in table if t["variant"] == "scratch"] == [1, 5, "all"]


def test_markdown_marks_the_best_and_the_indistinguishable():
  rows = _rows()
  md = report.markdown(report.aggregate(rows), ["scratch", "full_finetune", "lp_ft"], rows=rows)
  line = lambda v: next(l for l in md.splitlines() if l.startswith(f"| {v} | ") and "[" in l)
  assert "**" in line("lp_ft") and "**" in line("full_finetune")  # 0.5 pp apart, same spread
  assert "**" not in line("scratch")
  assert "contains 0" in md and "min / median / max" in md and "OOD top-1" in md
  assert md.index("| scratch") < md.index("| full_finetune")


def test_comparisons_are_paired_and_state_the_smallest_p():
  text = report.comparisons(_rows(), reference="full_finetune")
  assert "smallest possible p-value is 2/2^3 = 0.25" in text
  assert "| scratch | -50.0 | [-50.0, -50.0] | 0/0/3 | 0.25 |" in text
  assert "OOD top-1" in text


def test_write_all_outputs(tmp_path):
  report.write_all(_rows(), str(tmp_path), variant_order=["scratch", "full_finetune", "lp_ft"])
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 27
  assert list(table[0])[:10] == ["variant", "dataset", "shots", "seed", "kind", "selection",
                                 "budget", "hyperparams", "val_top1", "test_top1"]
  assert {"ood_gaussian_noise-3", "ood_contrast-3", "ood_mean", "trainable_params", "train_gflops",
          "wall_s", "peak_step_mb"} <= set(table[0])
  with open(tmp_path / "summary.csv") as f:
    assert len(list(csv.DictReader(f))) == 9
  for name in ("results.png", "cost.png", "ood.png"):
    assert os.path.getsize(tmp_path / name) > 10_000, name
  assert (tmp_path / "comparisons.md").read_text().startswith("# Paired comparisons")
