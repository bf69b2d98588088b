"""Every statistic against scipy.stats (or a hand computation) on small hand-made cases, and the
degenerate cases: one draw, equal values, all-zero differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from jtransfer.benchmark import stats


def test_summarize_is_the_student_t_interval():
  x = [71.2, 70.4, 72.0, 69.8, 71.1]
  s = stats.summarize(x)
  low, high = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
  assert (s["ci_low"], s["ci_high"]) == pytest.approx((low, high), rel=1e-12)
  assert s["n"] == 5 and s["std"] == pytest.approx(np.std(x, ddof=1))
  assert (s["min"], s["median"], s["max"]) == (69.8, 71.1, 72.0)
  # Three draws: wider than their range (a percentile bootstrap would be [min, max] at best).
  three = stats.summarize([29.0, 30.0, 31.0])
  assert three["ci_low"] < 29.0 and three["ci_high"] > 31.0
  assert three["ci_high"] - 30.0 == pytest.approx(sps.t.ppf(0.975, 2) * 1.0 / np.sqrt(3))


def test_summarize_of_one_value_has_no_interval_and_equal_values_a_point():
  one = stats.summarize([42.0])
  assert one["ci_low"] is None and one["ci_high"] is None and one["std"] is None
  assert (one["n"], one["mean"], one["min"], one["median"], one["max"]) == (1, 42.0, 42.0, 42.0, 42.0)
  flat = stats.summarize([3.0, 3.0, 3.0])
  assert flat["ci_low"] == flat["ci_high"] == 3.0 and flat["std"] == 0.0
  # Another level is the same t-interval at that level.
  x = [1.0, 2.5, 2.0, 4.0]
  low, high = sps.t.interval(0.9, 3, loc=np.mean(x), scale=sps.sem(x))
  s90 = stats.summarize(x, level=0.9)
  assert (s90["ci_low"], s90["ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_binomial_interval_is_clopper_pearson():
  for k, n, level in ((712, 1000, 0.95), (0, 50, 0.95), (50, 50, 0.95), (3, 10, 0.95),
                      (360, 450, 0.95), (1, 1, 0.9), (7, 20, 0.99)):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    assert stats.binomial_interval(k, n, level=level) == pytest.approx((ci.low, ci.high), abs=1e-12)
  low, high = stats.binomial_interval(700, 1000)
  assert 0.02 < (high - low) / 2 < 0.035  # 1,000 test images carry about ± 3 points


def test_paired_matches_scipy_t_wilcoxon_and_the_permutation_test():
  a = {0: 71.0, 1: 69.5, 2: 73.2, 3: 70.1, 4: 72.4, 5: 70.0}
  b = {0: 69.0, 1: 69.9, 2: 70.2, 3: 68.3, 4: 70.0, 5: 69.1}
  c = stats.paired(a, b)
  xa, xb = np.array(list(a.values())), np.array(list(b.values()))
  d = xa - xb
  assert c["n"] == 6 and c["mean_diff"] == pytest.approx(d.mean())
  assert c["p_t"] == pytest.approx(sps.ttest_rel(xa, xb).pvalue, rel=1e-12)
  assert c["p_wilcoxon"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-12)
  perm = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                              alternative="two-sided")
  assert c["p_signflip"] == pytest.approx(perm.pvalue, rel=1e-9)
  low, high = sps.t.interval(0.95, 5, loc=d.mean(), scale=sps.sem(d))
  assert (c["ci_low"], c["ci_high"]) == pytest.approx((low, high), rel=1e-12)
  assert (c["wins"], c["ties"], c["losses"]) == (5, 0, 1)
  # The interval excludes 0 exactly when the t-test's p is below 5 %.
  assert (c["ci_low"] > 0) == (c["p_t"] < 0.05)


def test_paired_with_a_zero_and_tied_differences_matches_scipy():
  d = np.array([1.0, 0.0, 2.0, -1.0, 1.0, 3.0, 4.0])  # one zero, |d| = 1 three times
  a, b = dict(enumerate(d + 70.0)), dict(enumerate(np.full(7, 70.0)))
  c = stats.paired(a, b)
  assert (c["wins"], c["ties"], c["losses"]) == (5, 1, 1)
  assert c["p_t"] == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
  assert c["p_wilcoxon"] == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-12)
  perm = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
  assert c["p_signflip"] == pytest.approx(perm.pvalue, rel=1e-9)
  # Every sign pattern of n pairs: the exact test's p cannot go below 2 / 2**n.
  big = stats.paired(dict(enumerate(np.arange(1.0, 11.0))), dict(enumerate(np.zeros(10))))
  assert big["p_signflip"] == pytest.approx(2 / 2**10)
  assert big["p_wilcoxon"] == pytest.approx(sps.wilcoxon(np.arange(1.0, 11.0)).pvalue)


def test_paired_uses_only_common_draws_and_handles_degenerate_differences():
  c = stats.paired({0: 1.0, 1: 2.0, 7: 5.0}, {0: 0.0, 1: 1.0, 3: 9.0})
  assert c["n"] == 2 and c["mean_diff"] == 1.0
  assert c["p_t"] == 0.0 and (c["ci_low"], c["ci_high"]) == (1.0, 1.0)  # constant differences
  zero = stats.paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
  assert zero["p_t"] == zero["p_wilcoxon"] == zero["p_signflip"] == 1.0 and zero["ties"] == 2
  single = stats.paired({0: 1.0}, {0: 0.5})
  assert single["p_t"] is None and single["ci_low"] is None
  with pytest.raises(ValueError, match="no draws in common"):
    stats.paired({0: 1.0}, {1: 1.0})
  assert stats.paired({0: 1.0, 1: 3.0}, {0: 0.0, 1: 1.0}, level=0.5)["ci_low"] == pytest.approx(
      sps.t.interval(0.5, 1, loc=1.5, scale=0.5)[0])


def test_holm_by_hand():
  adj = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
  # sorted: a .01*4=.04, c .03*3=.09, b .04*2=.08 -> monotone .09, d .5*1 -> .5
  assert adj == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})
  assert stats.holm({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})
  # Six tests, a tie, keys of any hashable kind, order kept:
  # sorted .001*6=.006, .01*5=.05, .01*4=.04 -> .05, .02*3=.06, .2*2=.4, .9*1=.9
  raw = {("q", 1): 0.02, ("q", 2): 0.01, 3: 0.9, "z": 0.001, 5: 0.2, 6: 0.01}
  adj = stats.holm(raw)
  assert list(adj) == list(raw)
  assert adj == pytest.approx({("q", 1): 0.06, ("q", 2): 0.05, 3: 0.9, "z": 0.006, 5: 0.4,
                               6: 0.05})
  assert all(adj[k] >= raw[k] for k in raw)  # never below the raw p
  assert stats.holm({"only": 0.03}) == {"only": 0.03}  # one test: nothing to correct
  assert stats.holm({}) == {}
  with pytest.raises(ValueError, match="outside"):
    stats.holm({"x": 1.5})


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="non-finite"):
    stats.summarize([1.0, float("nan")])
  with pytest.raises(ValueError, match="level"):
    stats.summarize([1.0, 2.0], level=95)
  with pytest.raises(ValueError, match="correct"):
    stats.binomial_interval(11, 10)
  with pytest.raises(ValueError, match="positive integer"):
    stats.binomial_interval(0, 0)
  with pytest.raises(ValueError, match="level"):
    stats.binomial_interval(5, 10, level=1.0)
  with pytest.raises(ValueError, match="no values"):
    stats.summarize([])
  with pytest.raises(ValueError, match="non-finite"):
    stats.paired({0: 1.0, 1: float("inf")}, {0: 0.0, 1: 0.0})
  with pytest.raises(ValueError, match="level"):
    stats.paired({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, level=0.0)
  with pytest.raises(ValueError, match="non-finite"):
    stats.holm({"x": float("nan")})
