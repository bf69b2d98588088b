"""Embarrassingly simple zero-shot learning (ESZSL; Romera-Paredes & Torr, ICML 2015), closed form.

    from jtransfer.methods.zeroshot import eszsl
    gamma, lam, grid = eszsl.select(x_seen, y_seen, attrs[seen], seed=0)   # on seen classes only
    V = eszsl.fit(x_seen, y_seen, attrs[seen], gamma=gamma, lam=lam)      # [D, A]
    scores = eszsl.predict(x_test, V, attrs[unseen])                      # [M, len(unseen)]

With features ``X`` [N, D], targets ``Y`` [N, Cs] (±1 by default, as in the paper) and the seen
classes' descriptions ``S`` [Cs, A], ESZSL minimises

    ‖X V Sᵀ − Y‖² + γ‖V Sᵀ‖² + λ‖X V‖² + γλ‖V‖²

whose minimiser is ``V = (XᵀX + γI)⁻¹ Xᵀ Y S (SᵀS + λI)⁻¹`` (the paper's Eq. 4 with the data as
rows); a class ``c`` then scores ``x V s_cᵀ``, so any class with a description can be scored, seen
or not. ``y`` holds indices into the rows of ``seen_attributes``.

The two regularisers are chosen by ``select`` on the SEEN classes only, as the paper does: the
seen classes are split into class-disjoint folds; each fold in turn is held out as pseudo-unseen
classes, ESZSL is fitted on the others and scored on the held-out classes' examples among the
held-out classes. Unseen classes and test data never enter the choice.
"""

from __future__ import annotations

import numpy as np

# The paper searched 10^-3 .. 10^3 for both.
DEFAULT_GRID = tuple(10.0 ** e for e in range(-3, 4))


def _targets(y: np.ndarray, num_seen: int, kind: str) -> np.ndarray:
  if y.min(initial=0) < 0 or y.max(initial=0) >= num_seen:
    raise ValueError(f"labels must index the {num_seen} rows of seen_attributes, got "
                     f"{y.min()}..{y.max()}")
  one_hot = np.eye(num_seen)[y]
  if kind == "pm1":
    return 2.0 * one_hot - 1.0
  if kind == "onehot":
    return one_hot
  raise ValueError(f"Unknown targets {kind!r}; use 'pm1' or 'onehot'")


def fit(x, y, seen_attributes, *, gamma: float, lam: float, targets: str = "pm1") -> np.ndarray:
  """The ESZSL map ``V`` [D, A] from features ``x`` [N, D], labels ``y`` [N] (indices into the
  rows of ``seen_attributes`` [Cs, A]) and the regularisers ``gamma`` (features) and ``lam``
  (attributes). ``targets``: 'pm1' (±1, the paper) or 'onehot' (0/1). Float64 throughout.

  ``(XᵀX + γI)⁻¹Xᵀ`` is computed as ``Xᵀ(XXᵀ + γI)⁻¹`` when there are fewer examples than
  features; the two are equal, the smaller system is cheaper and better conditioned.
  """
  if gamma <= 0 or lam <= 0:
    raise ValueError(f"gamma and lam must be > 0, got gamma={gamma}, lam={lam}")
  x = np.asarray(x, np.float64)
  s = np.asarray(seen_attributes, np.float64)
  y = np.asarray(y)
  if x.ndim != 2 or s.ndim != 2 or y.shape != (len(x),):
    raise ValueError(f"Expected x [N, D], y [N], seen_attributes [Cs, A]; got {x.shape}, "
                     f"{y.shape}, {s.shape}")
  ys = _targets(y, len(s), targets) @ s                                     # [N, A]
  n, d = x.shape
  if n < d:
    left = x.T @ np.linalg.solve(x @ x.T + gamma * np.eye(n), ys)           # [D, A]
  else:
    left = np.linalg.solve(x.T @ x + gamma * np.eye(d), x.T @ ys)
  right = s.T @ s + lam * np.eye(s.shape[1])                                # symmetric [A, A]
  return np.linalg.solve(right, left.T).T


def predict(x, v, attributes) -> np.ndarray:
  """Scores ``x V Sᵀ`` [M, C] of features ``x`` [M, D] for the classes described by
  ``attributes`` [C, A]; the prediction is the argmax over those C classes."""
  return np.asarray(x, np.float64) @ v @ np.asarray(attributes, np.float64).T


def per_class_accuracy(labels, predictions, classes) -> float:
  """Mean over ``classes`` of each class's top-1 accuracy (the standard zero-shot measure: a
  large class cannot hide a failed small one). Classes without examples are skipped."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  accs = [np.mean(predictions[labels == c] == c) for c in classes if np.any(labels == c)]
  if not accs:
    raise ValueError(f"No examples of any of the classes {list(classes)}")
  return float(np.mean(accs))


def class_folds(classes, folds: int, *, seed: int) -> list[np.ndarray]:
  """``classes`` shuffled by ``seed`` and cut into ``folds`` disjoint, covering, sorted parts."""
  classes = np.asarray(classes)
  perm = np.random.default_rng(seed).permutation(classes)
  return [np.sort(part) for part in np.array_split(perm, folds)]


def _grid_fits(x, y, s, gammas, lams, targets):
  """``fit`` for every (gamma, lam) at the cost of two eigendecompositions: with XᵀX = QΛQᵀ and
  SᵀS = PMPᵀ, V = Q [(Qᵀ Xᵀ Y S P) / ((Λ + γ)(M + λ)ᵀ)] Pᵀ. Yields (i, j, V)."""
  lam_x, q = np.linalg.eigh(x.T @ x)
  lam_s, p = np.linalg.eigh(s.T @ s)
  core = q.T @ (x.T @ (_targets(y, len(s), targets) @ s)) @ p                 # [D, A]
  for i, gamma in enumerate(gammas):
    for j, lam in enumerate(lams):
      yield i, j, q @ (core / np.outer(lam_x + gamma, lam_s + lam)) @ p.T


def select(x, y, seen_attributes, *, gammas=DEFAULT_GRID, lams=DEFAULT_GRID, folds: int = 3,
           seed: int = 0, targets: str = "pm1") -> tuple[float, float, np.ndarray]:
  """``(gamma, lam, grid)``: the pair of the log grid with the best class-disjoint validation
  accuracy on the seen data, and the ``[len(gammas), len(lams)]`` grid of those accuracies.

  The ``Cs`` seen classes are cut into ``folds`` class folds (``class_folds``); for each, ESZSL
  is fitted on the other folds' examples and scored (per-class accuracy) on the held-out fold's
  examples among the held-out classes only, i.e. as unseen classes. Needs at least 2 classes in
  every fold. Ties go to the first pair in grid order.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y)
  s = np.asarray(seen_attributes, np.float64)
  parts = class_folds(np.arange(len(s)), folds, seed=seed)
  if folds < 2 or min(len(p) for p in parts) < 2:
    raise ValueError(f"select needs folds >= 2 with >= 2 seen classes each; {len(s)} seen classes "
                     f"in {folds} folds")
  grid = np.zeros((len(gammas), len(lams)))
  for held in parts:
    kept = np.setdiff1d(np.arange(len(s)), held)
    train, val = np.isin(y, kept), np.isin(y, held)
    remap = np.full(len(s), -1)
    remap[kept] = np.arange(len(kept))
    for i, j, v in _grid_fits(x[train], remap[y[train]], s[kept], gammas, lams, targets):
      pred = held[predict(x[val], v, s[held]).argmax(axis=1)]
      grid[i, j] += per_class_accuracy(y[val], pred, held) / len(parts)
  i, j = np.unravel_index(np.argmax(grid), grid.shape)
  return float(gammas[i]), float(lams[j]), grid


__all__ = ["DEFAULT_GRID", "class_folds", "fit", "per_class_accuracy", "predict", "select"]
