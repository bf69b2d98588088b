"""Uncertainty for benchmark numbers that holds with few draws: Student-t intervals over draws, the
test set's own binomial interval within a draw, paired tests and Holm's correction.

    from jtransfer.benchmark import stats
    stats.summarize([71.2, 70.4, 72.0, 69.8, 71.1])     # mean, t-interval, std, min/median/max
    stats.binomial_interval(712, 1000)                  # Clopper-Pearson: the test set's ±
    c = stats.paired({0: 71.2, 1: 70.4}, {0: 69.0, 1: 70.1})   # a - b paired over draws
    c["mean_diff"], c["ci_low"], c["ci_high"], c["p_t"], c["p_wilcoxon"], c["p_signflip"]
    stats.holm({"q1": 0.01, "q2": 0.04, "q3": 0.03})    # {'q1': 0.03, 'q2': 0.06, 'q3': 0.06}

What each is valid for:

- ``summarize``: the mean over n draws (few-shot draws, seeds) with the Student-t interval
  ``mean ± t_{n-1} · s / √n``, exact when the per-draw scores are normal and conservative-ish
  otherwise; unlike a percentile bootstrap it does not collapse to [min, max] at n = 3. n = 1
  gives no interval (``None``): one draw says nothing about draw-to-draw spread.
- ``binomial_interval``: the uncertainty of one accuracy from the finite test set (Clopper-
  Pearson, exact, conservative). This is what an 'all'-shot feature classifier, whose score does
  not depend on the seed, still carries: 1,000 test images at 70 % give about ± 2.9 points.
- ``paired``: variants of a benchmark share their draws, so two are compared on the differences
  a[d] − b[d]. Primary: the paired t-test (``p_t``, consistent with the t-interval of the mean
  difference: it excludes 0 exactly when p_t < 1 − level). Robustness checks beside it: the exact
  Wilcoxon signed-rank test and the exact sign-flip permutation test of the mean difference, which
  assume no normality but cannot go below 2 / 2^n (0.0625 at n = 5, 0.002 at n = 10).
- ``holm``: Holm-Bonferroni adjusted p-values over a declared family of tests (controls the
  family-wise error; uniformly more powerful than Bonferroni). Declare the family before the run.

Every function checks its input and names what is wrong.
"""

from __future__ import annotations

import itertools
from typing import Hashable, Iterable, Mapping

import numpy as np
from scipy import stats as sps

__all__ = ["binomial_interval", "holm", "paired", "summarize"]

# Exact enumeration of the 2**n sign patterns up to this many pairs (65,536 x 16).
EXACT_MAX_N = 16


def _as_values(values: Iterable[float], where: str) -> np.ndarray:
  x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
  if x.ndim != 1:
    raise ValueError(f"{where}: expected a 1-D sequence of numbers, got shape {x.shape}")
  if x.size == 0:
    raise ValueError(f"{where}: no values")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{where}: non-finite values {x[~np.isfinite(x)].tolist()}")
  return x


def _check_level(level: float) -> float:
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level!r}")
  return float(level)


def _t_interval(x: np.ndarray, level: float) -> tuple[float | None, float | None]:
  n = len(x)
  if n < 2:
    return None, None
  mean, sd = float(np.mean(x)), float(np.std(x, ddof=1))
  if sd == 0.0:
    return mean, mean
  half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / float(np.sqrt(n))
  return mean - half, mean + half


def summarize(values: Iterable[float], *, level: float = 0.95) -> dict:
  """``{n, mean, std, min, median, max, ci_low, ci_high}``: the Student-t interval of the mean
  (a point when every value is equal); ``std`` with divisor n − 1. One value has no spread to
  estimate: ``std``, ``ci_low`` and ``ci_high`` are then ``None``, not 0."""
  x = _as_values(values, "summarize")
  low, high = _t_interval(x, _check_level(level))
  return {"n": int(len(x)), "mean": float(np.mean(x)),
          "std": float(np.std(x, ddof=1)) if len(x) > 1 else None,
          "min": float(np.min(x)), "median": float(np.median(x)), "max": float(np.max(x)),
          "ci_low": low, "ci_high": high}


def binomial_interval(correct: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
  """Clopper-Pearson interval of an accuracy ``correct / n`` (as fractions in [0, 1])."""
  if isinstance(n, bool) or int(n) != n or n < 1:
    raise ValueError(f"n must be a positive integer, got {n!r}")
  if isinstance(correct, bool) or int(correct) != correct or not 0 <= correct <= n:
    raise ValueError(f"correct must be an integer in [0, {n}], got {correct!r}")
  alpha = 1.0 - _check_level(level)
  low = 0.0 if correct == 0 else float(sps.beta.ppf(alpha / 2, correct, n - correct + 1))
  high = 1.0 if correct == n else float(sps.beta.ppf(1 - alpha / 2, correct + 1, n - correct))
  return low, high


def _signflip_p(d: np.ndarray, *, seed: int = 0, n_resamples: int = 100_000) -> float:
  """Two-sided p of the mean difference under random sign flips (exact up to EXACT_MAX_N)."""
  n = len(d)
  observed = abs(d.mean())
  if n <= EXACT_MAX_N:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
  else:
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_resamples, n))
  means = np.abs(signs @ d / n)
  tol = 1e-12 * max(1.0, observed)
  return float(np.mean(means >= observed - tol))


def paired(a: Mapping[Hashable, float], b: Mapping[Hashable, float], *,
           level: float = 0.95) -> dict:
  """``a - b`` over the draws (keys) both have: ``{n, mean_diff, ci_low, ci_high, p_t, p_wilcoxon,
  p_signflip, wins, ties, losses}``. Tests are two-sided; ``p_t`` is the primary one. With one
  common draw the interval and every p are ``None``; all-zero differences give p = 1; equal
  non-zero differences a point interval and ``p_t`` = 0 (t is infinite). Keys in only one of
  ``a``, ``b`` are left out; none in common is an error."""
  level = _check_level(level)
  common = sorted(set(a) & set(b), key=str)
  if not common:
    raise ValueError(f"paired: no draws in common ({sorted(a, key=str)} vs {sorted(b, key=str)})")
  d = _as_values([a[k] - b[k] for k in common], "paired differences")
  low, high = _t_interval(d, level)
  out = {"n": len(d), "mean_diff": float(d.mean()), "ci_low": low, "ci_high": high,
         "wins": int(np.sum(d > 0)), "ties": int(np.sum(d == 0)), "losses": int(np.sum(d < 0)),
         "p_t": None, "p_wilcoxon": None, "p_signflip": None}
  if len(d) < 2:
    return out
  if np.all(d == 0):
    out.update(p_t=1.0, p_wilcoxon=1.0, p_signflip=1.0)
    return out
  if np.std(d) == 0:  # every difference equal and non-zero: t is infinite
    out["p_t"] = 0.0
  else:
    out["p_t"] = float(sps.ttest_rel([a[k] for k in common], [b[k] for k in common]).pvalue)
  out["p_wilcoxon"] = float(sps.wilcoxon(d, zero_method="wilcox").pvalue)
  out["p_signflip"] = _signflip_p(d)
  return out


def holm(pvalues: Mapping[Hashable, float]) -> dict:
  """Holm-Bonferroni adjusted p-values, by the same keys (monotone in the raw order, ≤ 1)."""
  keys = list(pvalues)
  p = _as_values([pvalues[k] for k in keys], "holm") if keys else np.zeros(0)
  if np.any((p < 0) | (p > 1)):
    raise ValueError(f"holm: p-values outside [0, 1]: {p[(p < 0) | (p > 1)].tolist()}")
  m = len(p)
  order = np.argsort(p, kind="stable")
  adjusted = np.empty(m)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return {k: float(adjusted[i]) for i, k in enumerate(keys)}
