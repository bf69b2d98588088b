"""Aggregation over draws (Student-t intervals, spread, the test set's own interval), the declared
comparisons with Holm's correction, no "best" marks, flagged runs, the CSVs and the plots."""

import csv
import os

from ml_collections import config_dict
import numpy as np
import pytest
from scipy import stats as sps

from jtransfer.benchmark import comparisons, report

DECLARED = (("LP-FT vs FT", "lp_ft", "full_finetune", "test"),
            ("FT vs scratch", "full_finetune", "scratch", "test"),
            ("LP-FT vs FT, OOD", "lp_ft", "full_finetune", "ood"))


def _rows():
  rows = []
  for variant, base in (("scratch", 0.3), ("full_finetune", 0.8), ("lp_ft", 0.805)):
    for shots in (1, 5, "all"):
      jitters = (0.01, 0.0, -0.01) if variant == "lp_ft" else (-0.01, 0.0, 0.01)
      for seed, jitter in enumerate(jitters):
        acc = base + jitter + (0.1 if shots == "all" else 0)
        rows.append({"dataset": "uci_digits", "variant": variant, "shots": shots, "seed": seed,
                     "accuracy": acc, "test_top1": acc, "val_top1": acc - 0.02, "test_n": 1000,
                     "wall_s": 2.0, "selection": "val", "budget": 2, "selection_labels": 200,
                     "budget_steps": 47, "budget_epochs": 15.04, "resolution": 96,
                     "converged": not (variant == "scratch" and seed == 0),
                     "chosen": {"optim.lr": 0.001}, "chosen_id": "optim.lr=0.001",
                     "ood": {"gaussian_noise-3": acc - 0.1, "contrast-3": acc - 0.2},
                     "ood_mean": acc - 0.15, "trainable_params": 1000, "train_gflops": 1.5,
                     "search_gflops": 3.0, "peak_bytes": 2**20})
  return rows


def test_aggregate_is_the_student_t_interval_with_the_test_set_s_own():
  table = report.aggregate(_rows())
  r = next(t for t in table if t["variant"] == "scratch" and t["shots"] == 1)
  assert r["seeds"] == 3
  np.testing.assert_allclose(r["acc_mean"], 30.0)
  np.testing.assert_allclose(r["acc_std"], np.std([29, 30, 31], ddof=1))
  np.testing.assert_allclose((r["acc_min"], r["acc_median"], r["acc_max"]), (29.0, 30.0, 31.0))
  low, high = sps.t.interval(0.95, 2, loc=30.0, scale=sps.sem([29.0, 30.0, 31.0]))
  np.testing.assert_allclose((r["acc_ci_low"], r["acc_ci_high"]), (low, high))
  ci = sps.binomtest(300, 1000).proportion_ci(method="exact")
  np.testing.assert_allclose(r["test_ci_halfwidth"], 50 * (ci.high - ci.low))
  np.testing.assert_allclose(r["ood_mean"], 15.0)
  assert r["chosen"] == {"optim.lr=0.001": 3} and r["budget"] == 2 and r["not_converged"] == 1
  assert [t["shots"] for t in table if t["variant"] == "scratch"] == [1, 5, "all"]


def test_identical_draws_still_carry_the_test_set_s_interval():
  rows = [{"dataset": "d", "variant": "ridge", "shots": "all", "seed": s, "test_top1": 0.8,
           "test_n": 450, "wall_s": 1.0} for s in range(3)]
  r = report.aggregate(rows)[0]
  assert r["acc_ci_low"] == r["acc_ci_high"] == 80.0  # no spread over draws ...
  assert 3.0 < r["test_ci_halfwidth"] < 4.5           # ... but 450 test images carry ±3.7


def test_markdown_marks_nothing_best_and_flags_unconverged_runs():
  rows = _rows()
  md = report.markdown(report.aggregate(rows), ["scratch", "full_finetune", "lp_ft"], rows=rows,
                       declared=DECLARED)
  tables = md.split("## Declared comparisons")[0]
  assert "**" not in tables.replace("**Not converged**", "")
  assert "Student-t" in md and "min / median / max" in md and "OOD top-1" in md
  assert "**Not converged**" in md and "scratch at 1/class (1 of 3 draws)" in md
  assert "| scratch | val | 2 | 1: 200" in md and "1: 47 (15.0)" in md
  assert md.index("| scratch") < md.index("| full_finetune")
  assert "Holm-adjusted over the 9 tests" in md


def test_comparisons_are_paired_and_holm_corrected_over_the_declared_family():
  rows = _rows()
  results = comparisons.evaluate(rows, DECLARED)
  assert len(results) == 9  # 3 questions × 3 shot levels
  r = next(x for x in results if x["name"] == "FT vs scratch" and x["shots"] == 1)
  assert r["mean_diff"] == pytest.approx(50.0) and r["n"] == 3 and r["wins"] == 3
  lp = next(x for x in results if x["name"] == "LP-FT vs FT" and x["shots"] == 5)
  d = np.array([0.805 + j - 0.8 - k for j, k in zip((0.01, 0, -0.01), (-0.01, 0, 0.01))]) * 100
  assert lp["p_t"] == pytest.approx(sps.ttest_1samp(d, 0).pvalue)
  raw = [x["p_t"] for x in results]
  order = np.argsort(raw)
  expected = np.maximum.accumulate([min(1, (len(raw) - i) * raw[j]) for i, j in enumerate(order)])
  np.testing.assert_allclose([results[j]["p_holm"] for j in order], expected)
  text = comparisons.markdown(results)
  assert "LP-FT vs FT (`lp_ft` − `full_finetune`, test)" in text and "smallest p is 2/2^n" in text


def test_a_malformed_comparison_is_named():
  with pytest.raises(ValueError, match=r"comparisons\[0\].*unknown variant 'lpft'"):
    comparisons.check((("q", "lpft", "full_finetune", "test"),), ["lp_ft", "full_finetune"])
  with pytest.raises(ValueError, match="metric 'id'"):
    comparisons.check((("q", "lp_ft", "full_finetune", "id"),), ["lp_ft", "full_finetune"])


def test_write_all_outputs(tmp_path):
  protocol = config_dict.ConfigDict({"level": 0.95, "comparisons": DECLARED})
  report.write_all(_rows(), str(tmp_path), variant_order=["scratch", "full_finetune", "lp_ft"],
                   protocol=protocol)
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 27
  assert list(table[0])[:10] == ["variant", "dataset", "shots", "seed", "kind", "selection",
                                 "budget", "hyperparams", "val_top1", "test_top1"]
  assert {"ood_gaussian_noise-3", "ood_contrast-3", "ood_mean", "test_n", "selection_labels",
          "budget_steps", "budget_epochs", "resolution", "converged", "trainable_params",
          "train_gflops", "wall_s", "peak_step_mb"} <= set(table[0])
  with open(tmp_path / "summary.csv") as f:
    assert len(list(csv.DictReader(f))) == 9
  for name in ("results.png", "cost.png", "ood.png"):
    assert os.path.getsize(tmp_path / name) > 10_000, name
  text = (tmp_path / "comparisons.md").read_text()
  assert text.startswith("# Declared comparisons") and "p Holm" in text
