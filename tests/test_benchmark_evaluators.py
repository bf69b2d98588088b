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


def _with_dead_feature(x, tx, value=50.0, seed=1):
  """A last column that is 0 on every training example and large (and varying) on test."""
  live = np.abs(np.random.default_rng(seed).standard_normal(len(tx))) * value + value
  return np.c_[x, np.zeros(len(x))].astype(np.float32), np.c_[tx, live].astype(np.float32)


@pytest.mark.parametrize("name", ["linear_probe_cached", "logreg"])
def test_a_feature_constant_on_the_draw_cannot_swamp_the_logits(name, monkeypatch):
  x, y = _blobs(1)  # 1/class: a dimension constant over the draw is common (a dead ReLU)
  tx, ty = _blobs(25, seed=0)
  dx, dtx = _with_dead_feature(x, tx)
  fn = evaluators.EVALUATORS[name]
  kwargs = {"seed": 0} if name == "linear_probe_cached" else {}
  clean = fn(x, y, tx, num_classes=4, **kwargs)
  dead = fn(dx, y, dtx, num_classes=4, **kwargs)
  assert (clean["predictions"] == ty).all()
  np.testing.assert_array_equal(dead["predictions"], clean["predictions"])
  assert np.isfinite(dead["logits"]).all() and np.abs(dead["logits"]).max() < 100
  if name == "logreg":  # no gradient ever reaches that weight: the head ignores the column
    assert not evaluators.fit_logreg(dx, y, num_classes=4)["kernel"][-1].any()
  # The standardised test column: bounded by the floor, where std + 1e-6 gave ~1e8.
  mean, scale = evaluators.standardise(dx)
  assert np.abs((dtx - mean) / scale)[:, -1].max() < 1e3
  assert np.abs((dtx[:, -1] - dx[:, -1].mean()) / (dx[:, -1].std() + 1e-6)).min() > 1e7
  # The old standardisation, for the record: that column's gain swamps the logits.
  monkeypatch.setattr(evaluators, "standardise", lambda a: (a.mean(0), a.std(0) + 1e-6))
  old = fn(dx, y, dtx, num_classes=4, **kwargs)
  if name == "linear_probe_cached":  # its initial weight on the column survives (no gradient)
    assert np.abs(old["logits"]).max() > 1e4 and (old["predictions"] == ty).mean() < 0.9


def _shifted_blobs(n_per_class, classes, seed=0):
  """Blobs of ``classes`` with features far from zero mean and of very different scales."""
  x, y = _blobs(n_per_class, num_classes=len(classes), seed=seed)
  scales = np.logspace(-2, 2, x.shape[1]).astype(np.float32)
  return 7.0 + x * scales, np.asarray(classes)[y]


def test_fit_logreg_is_the_standardised_fit_folded_into_a_head():
  from sklearn import linear_model

  present = [0, 1, 2, 4]  # of 6 classes: 3 and 5 are absent from the draw
  x, y = _shifted_blobs(5, present)
  tx, _ = _shifted_blobs(20, present, seed=3)
  head = evaluators.fit_logreg(x, y, num_classes=6, C=0.5)
  assert head["converged"] and head["kernel"].shape == (16, 6) and head["bias"].shape == (6,)
  assert head["kernel"].dtype == head["bias"].dtype == np.float32
  # The same fit on standardised features, by hand: its logits at the present classes' rows.
  mean, scale = evaluators.standardise(x)
  ref = linear_model.LogisticRegression(C=0.5, max_iter=5000).fit((x - mean) / scale, y)
  logits = tx.astype(np.float32) @ head["kernel"] + head["bias"]
  want = ref.decision_function((tx - mean) / scale)
  np.testing.assert_allclose(logits[:, present], want, rtol=1e-5,
                             atol=1e-5 * np.abs(want).max())
  # Absent classes: zero weights, ABSENT_BIAS; never predicted.
  np.testing.assert_array_equal(head["kernel"][:, [3, 5]], 0.0)
  np.testing.assert_array_equal(head["bias"][[3, 5]], evaluators.ABSENT_BIAS)
  # The evaluator's logits are that head's.
  out = evaluators.logreg(x, y, tx, num_classes=6, C=0.5)
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())
  assert out["converged"] and set(out["predictions"]) <= set(present)
  np.testing.assert_array_equal(out["predictions"], np.asarray(present)[want.argmax(1)])


def test_fit_logreg_with_two_classes_present_is_the_binary_fit():
  from sklearn import linear_model

  x, y = _shifted_blobs(4, [2, 0])
  tx, _ = _shifted_blobs(10, [2, 0], seed=3)
  head = evaluators.fit_logreg(x, y, num_classes=3, C=2.0)
  mean, scale = evaluators.standardise(x)
  ref = linear_model.LogisticRegression(C=2.0, max_iter=5000).fit((x - mean) / scale, y)
  logits = (tx @ head["kernel"] + head["bias"]).astype(np.float64)
  e = np.exp(logits[:, [0, 2]] - logits[:, [0, 2]].max(1, keepdims=True))
  np.testing.assert_allclose(e / e.sum(1, keepdims=True), ref.predict_proba((tx - mean) / scale),
                             rtol=1e-4, atol=1e-6)
  assert head["bias"][1] == evaluators.ABSENT_BIAS and not head["kernel"][:, 1].any()


def test_fit_logreg_reports_when_it_stops_short_and_takes_one_class():
  x, y = _shifted_blobs(5, [0, 1, 2])
  assert not evaluators.fit_logreg(x, y, num_classes=3, C=100.0, max_iter=2)["converged"]
  out = evaluators.logreg(x[y == 1], y[y == 1], x, num_classes=3)
  assert out["converged"] and (out["predictions"] == 1).all()
