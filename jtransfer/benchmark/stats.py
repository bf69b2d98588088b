"""Uncertainty for benchmark numbers: bootstrap intervals and paired comparisons over seeds.

    from jtransfer.benchmark import stats
    stats.summarize([91.2, 90.4, 92.0])        # {'mean': 91.2, 'ci_low': ..., 'ci_high': ..., ...}
    cmp = stats.paired_comparison({0: 91.2, 1: 90.4, 2: 92.0}, {0: 89.0, 1: 90.1, 2: 90.2})
    cmp["mean_diff"], cmp["ci_low"], cmp["ci_high"], cmp["wins"], cmp["p_value"]
    best, tied = stats.indistinguishable_from_best({"lp": {0: 80.0, 1: 81.0},
                                                    "ft": {0: 84.0, 1: 85.5}})

Variants of one benchmark share their seeds, and a seed fixes the few-shot draw, so two variants
are compared *paired*: on the differences a[seed] - b[seed] over the seeds both have. This removes
the (often large) draw-to-draw variance that unpaired error bars include.

Everything is deterministic in ``seed``. Read small-sample results with care: with n seeds a
percentile bootstrap has at most C(2n-1, n) distinct resamples (10 for n = 3), and its interval
is narrower than a t-interval (resampled means spread with the plug-in, divisor-n deviation and
no Student-t tails: for n = 3 about 2.7x narrower at 95 %). With 3-5 seeds it can therefore exclude
0 where the exact sign-flip permutation test cannot reach p < 0.05 at all (its smallest two-sided
p-value is 2 / 2**n: 0.25 for n = 3, 0.0625 for n = 5).
``indistinguishable_from_best(..., test="permutation")`` uses that test instead of the interval.
"""

from __future__ import annotations

import itertools
from typing import Hashable, Iterable, Mapping

import numpy as np

__all__ = ["bootstrap_ci", "indistinguishable_from_best", "paired_comparison", "sign_flip_pvalue",
           "summarize"]

# Exact enumeration of all 2**n sign patterns up to this many pairs (65,536 x 16 matrix); Monte
# Carlo above it.
EXACT_MAX_N = 16
# Bootstrap resamples drawn per chunk (elements of the index matrix): bounds memory for long inputs.
_CHUNK_ELEMENTS = 1 << 22


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


def bootstrap_ci(values: Iterable[float], *, level: float = 0.95, n_boot: int = 10000,
                 seed: int = 0) -> tuple[float, float]:
  """Percentile-bootstrap interval of the mean of ``values``: ``(low, high)``.

  ``n_boot`` resamples of size n drawn with replacement (numpy ``default_rng(seed)``); the bounds
  are the (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled means. One value, or
  values that are all equal, give the point interval ``(v, v)``.
  """
  x = _as_values(values, "bootstrap_ci")
  level = _check_level(level)
  if n_boot < 1:
    raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
  if x.size == 1 or np.all(x == x[0]):
    # Every resample has the same mean; skip the draws so the bounds are exactly the value.
    return float(x[0]), float(x[0])
  rng = np.random.default_rng(seed)
  n = x.size
  rows = max(1, _CHUNK_ELEMENTS // n)
  means = np.empty(n_boot)
  for start in range(0, n_boot, rows):
    stop = min(n_boot, start + rows)
    means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
  alpha = (1.0 - level) / 2.0
  low, high = np.quantile(means, [alpha, 1.0 - alpha])
  return float(low), float(high)


def summarize(values: Iterable[float], *, level: float = 0.95, n_boot: int = 10000,
              seed: int = 0) -> dict:
  """``{mean, ci_low, ci_high, min, median, max, n, std}`` of ``values``.

  ``std`` is the sample standard deviation (ddof=1, as ``report.aggregate``), 0 for one value;
  ``ci_low``/``ci_high`` are ``bootstrap_ci`` of the mean.
  """
  x = _as_values(values, "summarize")
  low, high = bootstrap_ci(x, level=level, n_boot=n_boot, seed=seed)
  return {"mean": float(x.mean()), "ci_low": low, "ci_high": high, "min": float(x.min()),
          "median": float(np.median(x)), "max": float(x.max()), "n": int(x.size),
          "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def sign_flip_pvalue(diffs: Iterable[float], *, n_perm: int = 100000,
                     seed: int = 0) -> tuple[float, bool]:
  """Two-sided sign-flip permutation p-value of mean(diffs) = 0: ``(p, exact)``.

  Under the null each paired difference is as likely to have either sign, so the p-value is the
  fraction of the 2**n sign patterns whose |sum| is at least the observed |sum|. Exact enumeration
  for n <= ``EXACT_MAX_N``; above it ``n_perm`` random patterns and (1 + hits) / (1 + n_perm), which
  is a valid (slightly conservative) p-value. All-zero differences give p = 1.
  """
  d = _as_values(diffs, "sign_flip_pvalue")
  n = d.size
  observed = abs(d.sum())
  # Sums that are equal in exact arithmetic can differ in the last bits after a different order of
  # additions; count those as "at least as extreme" (the conservative side).
  tol = 1e-9 * max(float(np.abs(d).sum()), np.finfo(np.float64).tiny)
  if n <= EXACT_MAX_N:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    hits = int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return hits / len(signs), True
  rng = np.random.default_rng(seed)
  hits = 0
  rows = max(1, _CHUNK_ELEMENTS // n)
  for start in range(0, n_perm, rows):
    m = min(n_perm, start + rows) - start
    signs = rng.choice(np.array([1.0, -1.0]), size=(m, n))
    hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
  return (1 + hits) / (1 + n_perm), False


def paired_comparison(a: Mapping[Hashable, float], b: Mapping[Hashable, float], *, tie: float = 0.0,
                      level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
  """a versus b on the seeds both have: differences a[s] - b[s].

  Returns ``{mean_diff, ci_low, ci_high, wins, ties, losses, n, seeds, p_value, p_exact}``:
  ``ci_*`` the bootstrap interval of the mean difference, ``wins``/``losses`` the seeds where a is
  better/worse by more than ``tie`` (|diff| <= tie is a tie), ``seeds`` the shared seeds in sorted
  order, ``p_value`` the two-sided sign-flip permutation p-value (``p_exact``: by enumeration).
  Raises ValueError when the two share no seed.
  """
  if tie < 0:
    raise ValueError(f"tie must be >= 0, got {tie!r}")
  shared = set(a) & set(b)
  if not shared:
    raise ValueError(f"paired_comparison: no shared seeds (a has {sorted(a, key=repr)}, "
                     f"b has {sorted(b, key=repr)})")
  try:
    seeds = sorted(shared)
  except TypeError:  # mixed key types: any fixed order will do
    seeds = sorted(shared, key=repr)
  d = _as_values([float(a[s]) - float(b[s]) for s in seeds], "paired_comparison")
  low, high = bootstrap_ci(d, level=level, n_boot=n_boot, seed=seed)
  p, exact = sign_flip_pvalue(d, seed=seed)
  return {"mean_diff": float(d.mean()), "ci_low": low, "ci_high": high,
          "wins": int(np.count_nonzero(d > tie)), "ties": int(np.count_nonzero(np.abs(d) <= tie)),
          "losses": int(np.count_nonzero(d < -tie)), "n": int(d.size), "seeds": seeds,
          "p_value": p, "p_exact": exact}


TESTS = ("ci", "permutation")


def indistinguishable_from_best(per_variant: Mapping[str, Mapping[Hashable, float]], *,
                                level: float = 0.95, n_boot: int = 10000, seed: int = 0,
                                test: str = "ci") -> tuple[str, set[str]]:
  """The best variant by mean, and every variant not shown to be worse than it (best included).

  ``per_variant`` maps a name to ``{seed: score}``, higher is better. Each other variant is compared
  paired with the best (``paired_comparison(best, other)``); it is indistinguishable when
  ``test="ci"``: the bootstrap interval of the mean difference contains 0, or
  ``test="permutation"``: the sign-flip p-value is >= 1 - level. A variant that shares fewer than 2
  seeds with the best is counted as indistinguishable: one difference says nothing about its
  spread. Ties in the mean go to the first variant in ``per_variant``'s order.
  """
  if test not in TESTS:
    raise ValueError(f"test must be one of {TESTS}, got {test!r}")
  _check_level(level)
  if not per_variant:
    raise ValueError("indistinguishable_from_best: no variants")
  means = {}
  for name, scores in per_variant.items():
    if not scores:
      raise ValueError(f"indistinguishable_from_best: variant {name!r} has no scores")
    means[name] = float(_as_values([float(v) for v in scores.values()], f"variant {name!r}").mean())
  best = max(means, key=lambda name: means[name])  # max keeps the first of equal means
  tied = {best}
  for name, scores in per_variant.items():
    if name == best:
      continue
    if len(set(scores) & set(per_variant[best])) < 2:
      tied.add(name)
      continue
    cmp = paired_comparison(per_variant[best], scores, level=level, n_boot=n_boot, seed=seed)
    if test == "ci":
      same = cmp["ci_low"] <= 0.0 <= cmp["ci_high"]
    else:
      same = cmp["p_value"] >= 1.0 - level
    if same:
      tied.add(name)
  return best, tied
