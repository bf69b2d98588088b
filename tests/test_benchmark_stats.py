"""Bootstrap intervals, paired comparisons and the indistinguishable-from-best set, on small cases
whose answers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from jtransfer.benchmark import stats


def test_bootstrap_ci_of_one_value_and_of_constant_values_is_a_point():
  assert stats.bootstrap_ci([3.5]) == (3.5, 3.5)
  assert stats.bootstrap_ci([2.0, 2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_bootstrap_ci_covers_the_mean_and_lies_within_the_range():
  x = np.random.default_rng(1).normal(70.0, 3.0, size=12)
  low, high = stats.bootstrap_ci(x)
  assert x.min() <= low < x.mean() < high <= x.max()


def test_bootstrap_ci_is_deterministic_in_seed_and_narrows_with_level():
  x = [81.0, 84.5, 79.0, 88.0, 83.0]
  assert stats.bootstrap_ci(x, seed=3) == stats.bootstrap_ci(x, seed=3)
  assert stats.bootstrap_ci(x, seed=3) != stats.bootstrap_ci(x, seed=4)
  low90, high90 = stats.bootstrap_ci(x, level=0.9)
  low99, high99 = stats.bootstrap_ci(x, level=0.99)
  assert low99 <= low90 and high90 <= high99


def test_bootstrap_ci_matches_the_exact_resampling_distribution_for_two_values():
  # Resampling [0, 1] twice: mean 0 (p=1/4), 0.5 (p=1/2), 1 (p=1/4). The 2.5 %/97.5 % quantiles
  # of many draws are therefore 0 and 1, and the 30 %/70 % quantiles are both 0.5.
  assert stats.bootstrap_ci([0.0, 1.0], level=0.95) == (0.0, 1.0)
  assert stats.bootstrap_ci([0.0, 1.0], level=0.4) == (0.5, 0.5)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [[1.0, 2.0]]])
def test_bootstrap_ci_rejects_empty_nan_and_nested_inputs(bad):
  with pytest.raises(ValueError):
    stats.bootstrap_ci(bad)


def test_bootstrap_ci_rejects_a_bad_level():
  with pytest.raises(ValueError, match="level"):
    stats.bootstrap_ci([1.0, 2.0], level=95)


def test_summarize():
  s = stats.summarize([1.0, 2.0, 6.0])
  assert s["mean"] == 3.0 and s["median"] == 2.0 and s["min"] == 1.0 and s["max"] == 6.0
  assert s["n"] == 3
  assert s["std"] == pytest.approx(np.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
  assert s["ci_low"] <= s["mean"] <= s["ci_high"]
  one = stats.summarize([5.0])
  assert one["std"] == 0.0 and one["ci_low"] == one["ci_high"] == 5.0


def test_paired_comparison_hand_computed():
  a = {0: 11.0, 1: 12.0, 2: 13.0, 7: 99.0}  # seed 7 only in a: left out
  b = {0: 10.0, 1: 10.0, 2: 10.0, 9: 0.0}   # seed 9 only in b: left out
  c = stats.paired_comparison(a, b)
  assert c["mean_diff"] == 2.0
  assert (c["wins"], c["ties"], c["losses"], c["n"]) == (3, 0, 0, 3)
  assert c["seeds"] == [0, 1, 2]
  assert 1.0 <= c["ci_low"] <= 2.0 <= c["ci_high"] <= 3.0
  # Of the 8 sign patterns of (1, 2, 3) only +++ and --- reach |sum| = 6.
  assert c["p_value"] == 2 / 8 and c["p_exact"]


def test_paired_comparison_counts_ties_within_the_tolerance():
  a = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
  b = {0: 1.05, 1: 1.0, 2: 3.0, 3: 5.0}
  c = stats.paired_comparison(a, b, tie=0.1)
  assert (c["wins"], c["ties"], c["losses"]) == (1, 2, 1)
  c = stats.paired_comparison(a, b)
  assert (c["wins"], c["ties"], c["losses"]) == (1, 1, 2)


def test_paired_comparison_is_antisymmetric():
  a = {0: 80.0, 1: 83.0, 2: 79.5, 3: 85.0}
  b = {0: 78.0, 1: 84.0, 2: 77.0, 3: 82.0}
  ab, ba = stats.paired_comparison(a, b), stats.paired_comparison(b, a)
  assert ab["mean_diff"] == -ba["mean_diff"]
  assert (ab["wins"], ab["losses"]) == (ba["losses"], ba["wins"])
  assert ab["p_value"] == ba["p_value"]


def test_paired_comparison_without_shared_seeds_is_an_error():
  with pytest.raises(ValueError, match="no shared seeds"):
    stats.paired_comparison({0: 1.0}, {1: 1.0})


def test_sign_flip_pvalue_exact_cases():
  # (1, -1): the pattern sums are 0, 2, -2, 0; all 4 reach the observed |0|.
  assert stats.sign_flip_pvalue([1.0, -1.0]) == (1.0, True)
  # (1, 1, 3): only +++ and --- reach |5|.
  assert stats.sign_flip_pvalue([1.0, 1.0, 3.0]) == (2 / 8, True)
  # (3, -1, 1): |sums| over the 8 patterns are 5, 3, 3, 1 and their mirrors; 6 reach |3|.
  assert stats.sign_flip_pvalue([3.0, -1.0, 1.0]) == (6 / 8, True)
  assert stats.sign_flip_pvalue([0.0, 0.0, 0.0]) == (1.0, True)


def test_sign_flip_pvalue_is_robust_to_rounding_of_equal_sums():
  # 0.3 - 0.1 - 0.2 is 0 in exact arithmetic (p = 1) but about -2.8e-17 in floating point; a
  # pattern that also sums to exactly 0 may round to a smaller |sum| and must still count.
  assert stats.sign_flip_pvalue([0.3, -0.1, -0.2]) == (1.0, True)


def test_sign_flip_pvalue_monte_carlo_above_the_exact_limit():
  d = np.full(stats.EXACT_MAX_N + 4, 1.0)  # all positive: exact p = 2 / 2**20
  p, exact = stats.sign_flip_pvalue(d, n_perm=2000, seed=0)
  assert not exact
  assert p == pytest.approx(1 / 2001, abs=2 / 2001)  # (1 + hits) / (1 + n_perm), hits ~ 0
  assert stats.sign_flip_pvalue(d, n_perm=2000, seed=0) == (p, exact)


def test_indistinguishable_from_best_on_a_constructed_example():
  seeds = range(6)
  best = {s: 90.0 + s for s in seeds}
  per_variant = {
      "best": best,
      # Noisy but on average only 0.17 below: differences (2, -2, 1, -1, 0.5, 0.5) straddle 0.
      "close": {s: best[s] - d for s, d in zip(seeds, (2.0, -2.0, 1.0, -1.0, 0.5, 0.5))},
      # Always 3 to 4 points below: clearly worse.
      "worse": {s: best[s] - 3.0 - (s % 2) for s in seeds},
      # Shares only one seed with the best: cannot be told apart.
      "one_seed": {0: 10.0, 100: 0.0},
  }
  name, tied = stats.indistinguishable_from_best(per_variant)
  assert name == "best"
  assert tied == {"best", "close", "one_seed"}
  # The permutation test agrees here (p = 2 / 64 for "worse").
  assert stats.indistinguishable_from_best(per_variant, test="permutation") == (name, tied)


def test_indistinguishable_from_best_ci_and_permutation_differ_with_three_seeds():
  # Differences (1, 2, 3): the bootstrap interval [1, 3] excludes 0, but the exact permutation
  # p-value is 0.25. The docstring's warning about few seeds, as a test.
  per_variant = {"a": {0: 11.0, 1: 12.0, 2: 13.0}, "b": {0: 10.0, 1: 10.0, 2: 10.0}}
  assert stats.indistinguishable_from_best(per_variant) == ("a", {"a"})
  assert stats.indistinguishable_from_best(per_variant, test="permutation") == ("a", {"a", "b"})


def test_indistinguishable_from_best_ties_go_to_the_first_variant():
  per_variant = {"x": {0: 1.0, 1: 2.0}, "y": {0: 2.0, 1: 1.0}}
  assert stats.indistinguishable_from_best(per_variant) == ("x", {"x", "y"})


def test_indistinguishable_from_best_rejects_bad_input():
  with pytest.raises(ValueError, match="no variants"):
    stats.indistinguishable_from_best({})
  with pytest.raises(ValueError, match="'empty'"):
    stats.indistinguishable_from_best({"empty": {}})
  with pytest.raises(ValueError, match="test"):
    stats.indistinguishable_from_best({"a": {0: 1.0}}, test="t")
