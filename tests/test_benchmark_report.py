"""Aggregation over draws (Student-t intervals, spread, the test set's own interval), the declared
comparisons with Holm's correction, no "best" marks, flagged runs, the CSVs and the plots."""

import csv
import os
import re

from ml_collections import config_dict
import numpy as np
import pytest
from scipy import stats as sps

from jtransfer.benchmark import comparisons, report

DECLARED = (("LP-FT vs FT", "lp_ft", "full_finetune", "test"),
            ("FT vs scratch", "full_finetune", "scratch", "test"),
            ("LP-FT vs FT, OOD", "lp_ft", "full_finetune", "ood"))
PROTOCOL = config_dict.ConfigDict({"level": 0.95, "comparisons": DECLARED})


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
  md = report.markdown(report.aggregate(rows), ["scratch", "full_finetune", "lp_ft"],
                       protocol=PROTOCOL, rows=rows)
  tables, declared = md.split("## Declared comparisons")
  assert "**" not in tables and "best" not in tables.replace("No variant is marked best", "")
  assert not re.search(r"\bbest\b|✓|★|🏆", declared, re.IGNORECASE)
  # The only emphasis the comparisons may carry is their p-Holm column, the same in every row:
  # nothing singles out a variant or a cell.
  rows_md = [line for line in declared.splitlines() if line.startswith("| ") and "cell" not in line]
  holm_col = next(line for line in declared.splitlines() if "p Holm" in line).split("|").index(
      " p Holm ")
  for line in rows_md:
    assert all("**" not in c for i, c in enumerate(line.split("|")) if i != holm_col), line
  assert "Student-t" in md and "min / median / max" in md and "OOD top-1" in md
  assert "Not converged" in md and "scratch at 1/class (1 of 3 draws)" in md
  assert "| scratch | val | 2 | 1: 200" in md and "1: 47 (15.0)" in md
  assert md.index("| scratch") < md.index("| full_finetune")
  assert "Holm-adjusted over the 9 tests" in md
  assert "80.0 [" in md and "(±" in md  # mean [t-interval] (± the test set's)
  assert "With one draw" not in md


def test_one_draw_says_no_interval_or_test_is_possible():
  rows = [r for r in _rows() if r["seed"] == 0 or r["variant"] != "lp_ft"]
  md = report.markdown(report.aggregate(rows), protocol=PROTOCOL, rows=rows)
  assert ("With one draw no interval over draws and no test is possible: lp_ft at 1/class, "
          "lp_ft at 5/class, lp_ft at all/class") in md
  assert "A cell with one draw has no test" in md
  rows = [r for r in rows if r["seed"] == 0]
  md = report.markdown(report.aggregate(rows), protocol=PROTOCOL, rows=rows)
  assert "no test is possible: every cell" in md
  assert "80.0 [" not in md and "79.0 (±" in md  # no interval over draws; the test set's remains


def test_holm_runs_over_the_whole_declared_family_in_the_report():
  base = {"a": (0.70, 0.72, 0.71, 0.73), "b": (0.69, 0.70, 0.70, 0.71),
          "c": (0.66, 0.70, 0.66, 0.69)}
  rows = [{"dataset": "d", "variant": v, "shots": k, "seed": seed, "test_top1": acc + k / 100,
           "wall_s": 1.0} for v, accs in base.items() for k in (1, 5)
          for seed, acc in enumerate(accs)]
  declared = (("a vs b", "a", "b", "test"), ("a vs c", "a", "c", "test"))
  results = comparisons.evaluate(rows, declared)
  assert len(results) == 4  # 2 questions × 2 shot levels: one family of 4 tests
  raw = {i: r["p_t"] for i, r in enumerate(results)}
  # Holm by hand over the 4: sorted p_(1) <= ... <= p_(4), adjusted max_{j<=i} (5 - j) p_(j).
  by_p = sorted(raw, key=raw.get)
  running, expected = 0.0, {}
  for rank, i in enumerate(by_p):
    running = max(running, min(1.0, (4 - rank) * raw[i]))
    expected[i] = running
  assert [r["p_holm"] for r in results] == pytest.approx([expected[i] for i in range(4)])
  # Not Holm within each question: alone, 'a vs b' would be corrected over 2 tests, not 4.
  alone = comparisons.evaluate(rows, declared[:1])
  assert [r["p_holm"] for r in alone] != pytest.approx([r["p_holm"] for r in results[:2]])
  assert results[0]["p_holm"] > alone[0]["p_holm"]
  md = report.markdown(report.aggregate(rows), protocol={"level": 0.95, "comparisons": declared},
                       rows=rows)
  assert "Holm-adjusted over the 4 tests" in md
  for r in results:
    assert f"| {comparisons._p(r['p_holm'])} |" in md.replace("**", "")


def test_a_malformed_comparison_is_named():
  with pytest.raises(ValueError, match=r"comparisons\[0\].*unknown variant 'lpft'"):
    comparisons.check((("q", "lpft", "full_finetune", "test"),), ["lp_ft", "full_finetune"])
  with pytest.raises(ValueError, match="metric 'id'"):
    comparisons.check((("q", "lp_ft", "full_finetune", "id"),), ["lp_ft", "full_finetune"])


def test_write_all_outputs(tmp_path):
  rows = _rows()
  del rows[0]["test_n"], rows[0]["resolution"]  # absent in a row: an empty cell
  report.write_all(rows, str(tmp_path), variant_order=["scratch", "full_finetune", "lp_ft"],
                   protocol=PROTOCOL)
  with open(tmp_path / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert len(table) == 27
  assert list(table[0])[:10] == ["variant", "dataset", "shots", "seed", "kind", "selection",
                                 "budget", "hyperparams", "val_top1", "test_top1"]
  assert {"ood_gaussian_noise-3", "ood_contrast-3", "ood_mean", "test_n", "selection_labels",
          "budget_steps", "budget_epochs", "resolution", "converged", "trainable_params",
          "train_gflops", "wall_s", "peak_step_mb"} <= set(table[0])
  by_cell = {(r["variant"], r["shots"], r["seed"]): r for r in table}
  assert rows[0]["variant"] == "scratch" and rows[0]["shots"] == 1 and rows[0]["seed"] == 0
  first = by_cell[("scratch", "1", "0")]
  assert first["test_n"] == "" and first["resolution"] == "" and first["converged"] == "False"
  assert by_cell[("lp_ft", "5", "1")]["test_n"] == "1000"
  assert by_cell[("lp_ft", "5", "1")]["resolution"] == "96"
  assert by_cell[("lp_ft", "5", "1")]["converged"] == "True"
  assert by_cell[("lp_ft", "5", "1")]["budget_steps"] == "47"
  assert by_cell[("lp_ft", "5", "1")]["selection_labels"] == "200"
  with open(tmp_path / "summary.csv") as f:
    summary = list(csv.DictReader(f))
  assert len(summary) == 9
  assert {"seeds", "acc_mean", "acc_ci_low", "acc_ci_high", "acc_std", "acc_min", "acc_median",
          "acc_max", "test_ci_halfwidth"} <= set(summary[0])
  assert "**" not in (tmp_path / "results.md").read_text().split("## Declared comparisons")[0]
  for name in ("results.png", "cost.png", "ood.png"):
    assert os.path.getsize(tmp_path / name) > 10_000, name
  text = (tmp_path / "comparisons.md").read_text()
  assert text.startswith("# Declared comparisons") and "p Holm" in text
