"""Feature-space classifiers: correct on separable data, and the ridge solver equals its closed form."""

import numpy as np
import pytest

from jtransfer.benchmark import evaluators


def _blobs(n_per_class, num_classes=4, dim=16, seed=0, spread=0.3):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((num_classes, dim)) * 3
  y = np.repeat(np.arange(num_classes), n_per_class)
  x = centres[y] + spread * rng.standard_normal((len(y), dim))
  return x.astype(np.float32), y


@pytest.mark.parametrize("name", sorted(evaluators.EVALUATORS))
def test_separable_blobs_are_classified(name):
  x, y = _blobs(5)
  tx, ty = _blobs(25, seed=0)  # same centres, more draws
  kwargs = {"seed": 0} if name == "linear_probe_cached" else {}
  out = evaluators.EVALUATORS[name](x, y, tx, num_classes=4, **kwargs)
  assert out["logits"].shape == (len(ty), 4)
  assert (out["predictions"] == ty).mean() == 1.0


def test_ridge_matches_primal_and_dual_forms():
  x, y = _blobs(3, dim=64)  # n=12 < d=65: dual
  tx, _ = _blobs(4, dim=64, seed=0)
  dual = evaluators.ridge_fewshot(x, y, tx, num_classes=4, l2_reg=0.5)["logits"]
  xn, tn = evaluators._normalise(x, tx)
  xb = np.c_[xn, np.ones(len(xn))]
  tb = np.c_[tn, np.ones(len(tn))]
  target = np.eye(4)[y] * 2 - 1
  primal = tb @ np.linalg.solve(xb.T @ xb + 0.5 * np.eye(xb.shape[1]), xb.T @ target)
  np.testing.assert_allclose(dual, primal, rtol=1e-4, atol=1e-5)


def test_knn_votes_for_nearest_class():
  x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
  y = np.array([0, 0, 1, 1])
  out = evaluators.knn(x, y, np.array([[0.2, 1.0], [1.0, 0.05]], np.float32), num_classes=2, k=3)
  assert list(out["predictions"]) == [1, 0]
