"""The zero-shot protocol: disjoint seen/unseen class splits, ZSL and generalised ZSL, with chance.

    from jtransfer import zeroshot
    out = zeroshot.zero_shot_protocol(train_x, train_y, test_x, test_y,
                                      zeroshot.digit_attributes(), splits=3, seed=0)
    out["summary"]["zsl_unseen"]        # {'mean', 'std', 'min', 'max', 'n'} over the splits
    out["summary"]["zsl_chance"]        # the same for chance, to read beside it

Per split (``class_splits``: the classes shuffled by ``seed`` and cut into ``splits`` disjoint
unseen sets, so every class is unseen exactly once per seed; the seen classes are the others):

1. features are standardised with the mean and std of the seen classes' TRAIN examples;
2. ESZSL's (γ, λ) are chosen by ``eszsl.select`` on those seen training examples alone
   (class-disjoint folds inside the seen set), then ESZSL is fitted on all of them;
3. **ZSL**: the unseen classes' TEST examples, classified among the unseen classes only;
   chance = 1 / #unseen;
4. **generalised ZSL** (Xian et al. 2018): every TEST example classified among all classes;
   ``gzsl_seen`` / ``gzsl_unseen`` are the accuracies on the seen / unseen classes' examples,
   ``gzsl_h`` their harmonic mean; chance = 1 / #classes for each.

Accuracies are per-class means (``eszsl.per_class_accuracy``). Training examples of unseen classes
are never read, and nothing is selected on test data. ``evaluate_split`` takes the features of one
split, so features that depend on the split (a backbone trained on its seen classes only) go
through it and ``summarize``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jtransfer.methods.zeroshot import eszsl

# The per-split numbers summarize() aggregates; each accuracy has its chance level beside it.
METRICS = ("zsl_unseen", "zsl_chance", "gzsl_seen", "gzsl_unseen", "gzsl_h", "gzsl_chance")


def class_splits(num_classes: int, *, splits: int, seed: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
  """``[(seen, unseen)]``: ``splits`` class-disjoint unseen sets covering all classes (a seeded
  shuffle cut into near-equal parts), each with the remaining classes as seen. Deterministic in
  ``seed``; needs at least 2 unseen classes per split (1 would make ZSL accuracy trivially 100%)."""
  if splits < 2 or num_classes // splits < 2:
    raise ValueError(f"{num_classes} classes cannot make {splits} splits of >= 2 unseen classes "
                     "(and splits must be >= 2)")
  all_classes = np.arange(num_classes)
  return [(np.setdiff1d(all_classes, unseen), unseen)
          for unseen in eszsl.class_folds(all_classes, splits, seed=seed)]


def _harmonic(a: float, b: float) -> float:
  return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def evaluate_split(train_x, train_y, test_x, test_y, attributes, *, seen: Sequence[int],
                   unseen: Sequence[int], gammas=eszsl.DEFAULT_GRID, lams=eszsl.DEFAULT_GRID,
                   folds: int = 3, seed: int = 0) -> dict:
  """The numbers of one seen/unseen split (see the module docstring); ``seed`` seeds the
  validation folds of ``eszsl.select``. Labels are class indices into the rows of
  ``attributes`` [C, A]."""
  seen, unseen = np.asarray(seen), np.asarray(unseen)
  attributes = np.asarray(attributes, np.float64)
  train_y, test_y = np.asarray(train_y), np.asarray(test_y)
  if np.intersect1d(seen, unseen).size:
    raise ValueError(f"seen {seen} and unseen {unseen} classes overlap")
  keep = np.isin(train_y, seen)
  x = np.asarray(train_x, np.float64)[keep]
  mean, std = x.mean(0), x.std(0) + 1e-6
  x = (x - mean) / std
  t = (np.asarray(test_x, np.float64) - mean) / std
  remap = np.full(len(attributes), -1)
  remap[seen] = np.arange(len(seen))
  y = remap[train_y[keep]]
  gamma, lam, _ = eszsl.select(x, y, attributes[seen], gammas=gammas, lams=lams, folds=folds,
                               seed=seed)
  v = eszsl.fit(x, y, attributes[seen], gamma=gamma, lam=lam)

  is_unseen = np.isin(test_y, unseen)
  zsl_pred = unseen[eszsl.predict(t[is_unseen], v, attributes[unseen]).argmax(1)]
  gzsl_pred = eszsl.predict(t, v, attributes).argmax(1)
  s_acc = eszsl.per_class_accuracy(test_y, gzsl_pred, seen)
  u_acc = eszsl.per_class_accuracy(test_y, gzsl_pred, unseen)
  return {
      "seen": seen.tolist(), "unseen": unseen.tolist(), "gamma": gamma, "lam": lam,
      "zsl_unseen": eszsl.per_class_accuracy(test_y[is_unseen], zsl_pred, unseen),
      "zsl_chance": 1.0 / len(unseen),
      "gzsl_seen": s_acc, "gzsl_unseen": u_acc, "gzsl_h": _harmonic(s_acc, u_acc),
      "gzsl_chance": 1.0 / len(attributes),
  }


def summarize(results: Sequence[dict]) -> dict:
  """``{metric: {'mean', 'std', 'min', 'max', 'n'}}`` over splits (std with ddof=1, 0 for one)."""
  out = {}
  for m in METRICS:
    v = np.asarray([r[m] for r in results], np.float64)
    out[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
              "min": float(v.min()), "max": float(v.max()), "n": len(v)}
  return out


def zero_shot_protocol(train_x, train_y, test_x, test_y, attributes, *, splits: int, seed: int,
                       **kwargs) -> dict:
  """``{'splits': [evaluate_split(...) per split], 'summary': summarize(...)}`` over
  ``class_splits(len(attributes), splits=splits, seed=seed)``; ``kwargs`` go to
  ``evaluate_split`` (gammas, lams, folds)."""
  results = [evaluate_split(train_x, train_y, test_x, test_y, attributes, seen=seen,
                            unseen=unseen, seed=seed, **kwargs)
             for seen, unseen in class_splits(len(attributes), splits=splits, seed=seed)]
  return {"splits": results, "summary": summarize(results)}


__all__ = ["METRICS", "class_splits", "evaluate_split", "summarize", "zero_shot_protocol"]
