"""Classifiers on frozen features: closed-form ridge, kNN, linear probes and nearest class mean.

    acc = ridge_fewshot(train_x, train_y, test_x, num_classes=10)["predictions"]
    out = linear_probe(train_x, train_y, test_x, num_classes=10, seed=0)   # {'logits', 'predictions'}
    out = logreg(train_x, train_y, test_x, num_classes=10, C=1.0)         # ... and 'converged'
    head = fit_logreg(train_x, train_y, num_classes=10, C=1.0)  # logits = x @ kernel + bias

All take features as ``[N, D]`` arrays (e.g. cached ``pre_logits``, or flattened pixels) and
return test-set scores, so few-shot evaluation never re-runs the backbone.

- ``ridge``: least squares onto ±1 targets (big_vision's fewshot_lsr), closed form;
- ``knn``: cosine k-nearest-neighbours, similarity-weighted votes;
- ``linear_probe_cached``: softmax regression, a fixed number of full-batch AdamW steps;
- ``logreg``: multinomial logistic regression fitted to convergence (scikit-learn, L-BFGS), whose
  weights ``fit_logreg`` returns in the original feature space (a network head: LP-FT);
- ``ncm``: nearest class mean.

Ridge, kNN and NCM centre and L2-normalise each example; the two softmax probes instead
standardise each dimension with a floored std (``standardise``), an affine map that folds into
the weights.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import exceptions, linear_model
import threadpoolctl

# ``standardise`` floors each dimension's std at this fraction of the mean std over dimensions.
STD_FLOOR = 1.0
# ``fit_logreg``'s bias for a class without a training example (its weights are zero).
ABSENT_BIAS = -1e4


def _normalise(train_x, test_x):
  """Centres on the train mean and scales rows to unit norm (big_vision's few-shot preprocessing)."""
  mean = np.asarray(train_x, np.float64).mean(axis=0, keepdims=True)
  def f(x):
    x = np.asarray(x, np.float64) - mean
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x))[:, None], 1e-12)
  return f(train_x), f(test_x)


def standardise(train_x) -> tuple[np.ndarray, np.ndarray]:
  """``(mean, scale)`` of the train draw per dimension: features map to ``(x - mean) / scale``.

  ``scale`` is the draw's std floored at ``STD_FLOOR`` × its mean over dimensions (1 where no
  dimension varies). Why floored: with one example per class a dimension is often constant over
  the draw (a ReLU feature that is 0 on all ten, a border pixel), and ``std + 1e-6`` then scales
  its test values by ~1e6, so whatever weight it holds swamps the logits (the cached probe fell
  to 17 % where ridge got 44 % at 1/class). The floor caps any dimension's gain at that of a
  typical one. Why not L2-normalise each example as ridge does: that is not affine, so the
  fitted weights could not be folded back into a head on the raw features (``fit_logreg``). Why
  a floor at the mean std, not a smaller fraction: on UCI digits at 1/class (5 draws, the
  probe's defaults), std + 1e-6 / floors 0.1 / 1.0 / L2 rows: pixels 48 / 54 / 59 / 61 %,
  random ReLU features of them 12 / 61 / 63 / 63 %; at 20/class and on all of train 1.0 is
  within a point of the best of 0.1, 0.3, 1.0, 3.0 on both.
  """
  x = np.asarray(train_x, np.float64)
  mean, std = x.mean(0), x.std(0)
  floor = STD_FLOOR * std.mean() if std.size else 0.0
  return mean, np.maximum(std, floor if floor > 0 else 1.0)


def ridge_fewshot(train_x, train_y, test_x, *, num_classes: int, l2_reg: float = 1.0) -> dict:
  """Closed-form least squares onto ±1 one-hot targets with an L2 penalty (big_vision's fewshot_lsr).

  Solved in whichever of the primal (D×D) or dual (N×N) forms is smaller; a bias column is added.
  Returns ``{'logits': [M, C] scores, 'predictions': [M]}``.
  """
  x, t = _normalise(train_x, test_x)
  x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
  t = np.concatenate([t, np.ones((len(t), 1))], axis=1)
  y = np.eye(num_classes)[np.asarray(train_y)] * 2.0 - 1.0
  n, d = x.shape
  if n < d:  # dual: w = Xᵀ (X Xᵀ + λI)⁻¹ Y
    w = x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(n), y)
  else:
    w = np.linalg.solve(x.T @ x + l2_reg * np.eye(d), x.T @ y)
  scores = t @ w
  return {"logits": scores.astype(np.float32), "predictions": scores.argmax(axis=1)}


def knn(train_x, train_y, test_x, *, num_classes: int, k: int = 10) -> dict:
  """Cosine k-nearest-neighbours with similarity-weighted votes; ``k`` is capped at the train size."""
  x, t = _normalise(train_x, test_x)
  k = min(k, len(x))
  sims = t @ x.T
  top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
  votes = np.zeros((len(t), num_classes))
  rows = np.arange(len(t))[:, None]
  np.add.at(votes, (np.broadcast_to(rows, top.shape), np.asarray(train_y)[top]),
            np.maximum(sims[rows, top], 0) + 1e-6)
  return {"logits": votes.astype(np.float32), "predictions": votes.argmax(axis=1)}


@functools.partial(jax.jit, static_argnames="steps")
def _fit_softmax(params, x, y, lr, weight_decay, *, steps: int):
  """``steps`` of full-batch AdamW on softmax regression; data and rates are arguments, so one
  program serves every seed, grid point and draw of the same shapes."""
  tx = optax.adamw(lr, weight_decay=weight_decay)

  def loss_fn(p):
    logits = x @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def body(carry, _):
    p, s = carry
    g = jax.grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None
  (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
  return params


def linear_probe(train_x, train_y, test_x, *, num_classes: int, seed: int, steps: int = 300,
                 lr: float = 0.1, weight_decay: float = 1e-4) -> dict:
  """Softmax regression on ``standardise``d features: full-batch AdamW, one jit for all steps.

  ``steps`` need not reach convergence; ``logreg`` fits the same model to convergence.
  """
  mean, scale = standardise(train_x)
  x = jnp.asarray((train_x - mean) / scale, jnp.float32)
  t = jnp.asarray((test_x - mean) / scale, jnp.float32)
  y = jnp.asarray(train_y, jnp.int32)
  key = jax.random.key(seed)
  params = {"w": jax.random.normal(key, (x.shape[1], num_classes)) * 0.01,
            "b": jnp.zeros((num_classes,))}
  params = _fit_softmax(params, x, y, np.float32(lr), np.float32(weight_decay), steps=int(steps))
  logits = np.asarray(t @ params["w"] + params["b"])
  return {"logits": logits, "predictions": logits.argmax(axis=1)}


def fit_logreg(train_x, train_y, *, num_classes: int, C: float = 1.0, max_iter: int = 5000,
               tol: float = 1e-4, absent_bias: float = ABSENT_BIAS) -> dict:
  """Multinomial logistic regression on ``standardise``d features, fitted to convergence.

  scikit-learn's ``LogisticRegression`` (L-BFGS, L2 penalty of strength ``1/C`` on the weights,
  the intercept unpenalised) on ``(x - mean) / scale``; the standardisation is folded into the
  weights, so the returned head works on the ORIGINAL features:
  ``logits = x @ kernel + bias`` with ``kernel = W / scale`` and ``bias = b - mean @ kernel``.

  scikit-learn sees only the classes present in the draw; their weights are placed at their
  rows. A class absent from the draw gets zero weights and the bias ``absent_bias`` (default
  ``ABSENT_BIAS``: finite, so a head loaded from it gives finite losses, but never predicted).
  With two classes present scikit-learn fits one binary logit ``z``; the two rows get ``∓z/2``,
  whose softmax is its sigmoid. With one class present nothing is fitted: it scores 0.

  Returns ``{'kernel': [D, num_classes] float32, 'bias': [num_classes] float32, 'converged':
  bool (L-BFGS met ``tol`` within ``max_iter`` iterations), 'n_iter': int}``.
  """
  x_raw, y = np.asarray(train_x, np.float64), np.asarray(train_y).astype(np.int64)
  mean, scale = standardise(x_raw)
  present = np.unique(y)
  w = np.zeros((x_raw.shape[1], num_classes))
  b = np.full((num_classes,), float(absent_bias))
  b[present] = 0.0
  converged, n_iter = True, 0
  if len(present) > 1:
    clf = linear_model.LogisticRegression(C=float(C), solver="lbfgs", max_iter=int(max_iter),
                                          tol=float(tol))
    # One BLAS thread: beside JAX's and tf.data's threads on a small CPU, L-BFGS's many small
    # products ran 20-50x slower multi-threaded (2.7 s vs 0.05 s on the 2-core machine).
    with (warnings.catch_warnings(record=True) as caught,
          threadpoolctl.threadpool_limits(1, user_api="blas")):
      warnings.simplefilter("always", exceptions.ConvergenceWarning)
      clf.fit((x_raw - mean) / scale, y)
    converged = not any(issubclass(c.category, exceptions.ConvergenceWarning) for c in caught)
    n_iter = int(np.max(clf.n_iter_))
    coef, intercept = clf.coef_, clf.intercept_
    if len(coef) == 1:  # binary: one logit z for classes_[1]; softmax of (-z/2, z/2) = sigmoid(z)
      coef = np.concatenate([-coef, coef]) / 2
      intercept = np.concatenate([-intercept, intercept]) / 2
    w[:, clf.classes_] = coef.T
    b[clf.classes_] = intercept
  kernel = w / scale[:, None]
  bias = b - mean @ kernel
  return {"kernel": kernel.astype(np.float32), "bias": bias.astype(np.float32),
          "converged": bool(converged), "n_iter": n_iter}


def logreg(train_x, train_y, test_x, *, num_classes: int, C: float = 1.0,
           max_iter: int = 5000, tol: float = 1e-4) -> dict:
  """``fit_logreg``'s head on ``test_x``: ``{'logits', 'predictions', 'converged', 'n_iter'}``;
  the logits are exactly ``test_x @ kernel + bias`` (what a network head loaded with them gives)."""
  head = fit_logreg(train_x, train_y, num_classes=num_classes, C=C, max_iter=max_iter, tol=tol)
  logits = np.asarray(test_x, np.float32) @ head["kernel"] + head["bias"]
  return {"logits": logits, "predictions": logits.argmax(axis=1), "converged": head["converged"],
          "n_iter": head["n_iter"]}


def nearest_class_mean(train_x, train_y, test_x, *, num_classes: int, cosine: bool = True
                       ) -> dict:
  """Nearest class mean (prototypical networks' classifier) on frozen features.

  ``cosine=True``: features are centred on the train mean and scaled to unit norm, the class
  means renormalised, and a test example scores its cosine similarity to each mean.
  ``cosine=False``: scores are minus the squared Euclidean distance to the raw class means.
  Classes without a training example score -inf. Returns ``{'logits', 'predictions'}``.
  """
  y = np.asarray(train_y)
  if cosine:
    x, t = _normalise(train_x, test_x)
  else:
    x, t = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
  present = np.asarray([np.any(y == c) for c in range(num_classes)])
  means = np.stack([x[y == c].mean(0) if present[c] else np.zeros(x.shape[1])
                    for c in range(num_classes)])
  if cosine:
    scores = t @ (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).T
  else:
    scores = -((t[:, None, :] - means[None]) ** 2).sum(-1)
  scores[:, ~present] = -np.inf
  return {"logits": scores.astype(np.float32), "predictions": scores.argmax(axis=1)}


EVALUATORS = {"ridge": ridge_fewshot, "knn": knn, "linear_probe_cached": linear_probe,
              "logreg": logreg, "ncm": nearest_class_mean}

__all__ = ["ABSENT_BIAS", "EVALUATORS", "STD_FLOOR", "fit_logreg", "knn", "linear_probe", "logreg",
           "nearest_class_mean", "ridge_fewshot", "standardise"]
