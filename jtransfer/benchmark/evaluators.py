"""Classifiers on frozen features: closed-form ridge, kNN, a linear probe and nearest class mean.

    acc = ridge_fewshot(train_x, train_y, test_x, num_classes=10)["predictions"]
    out = linear_probe(train_x, train_y, test_x, num_classes=10, seed=0)   # {'logits', 'predictions'}

All take features as ``[N, D]`` arrays (e.g. cached ``pre_logits``) and return test-set scores, so
few-shot evaluation never re-runs the backbone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _normalise(train_x, test_x):
  """Centres on the train mean and scales rows to unit norm (big_vision's few-shot preprocessing)."""
  mean = train_x.mean(axis=0, keepdims=True)
  f = lambda x: (x - mean) / np.maximum(np.linalg.norm(x - mean, axis=1, keepdims=True), 1e-12)
  return f(np.asarray(train_x, np.float64)), f(np.asarray(test_x, np.float64))


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
  """Softmax regression on (standardised) features: full-batch AdamW, one jit for all steps."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  x = jnp.asarray((train_x - mean) / std, jnp.float32)
  t = jnp.asarray((test_x - mean) / std, jnp.float32)
  y = jnp.asarray(train_y, jnp.int32)
  key = jax.random.key(seed)
  params = {"w": jax.random.normal(key, (x.shape[1], num_classes)) * 0.01,
            "b": jnp.zeros((num_classes,))}
  params = _fit_softmax(params, x, y, np.float32(lr), np.float32(weight_decay), steps=int(steps))
  logits = np.asarray(t @ params["w"] + params["b"])
  return {"logits": logits, "predictions": logits.argmax(axis=1)}


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
              "ncm": nearest_class_mean}
