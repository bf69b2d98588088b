"""Eval metrics against scikit-learn on the same predictions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from jtransfer.train import metrics


def _predictions(n=120, c=7, seed=0, absent=()):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  for a in absent:
    labels[labels == a] = (a + 1) % c
  logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[labels] * rng.random((n, 1))
  return logits.astype(np.float32), labels


def test_every_metric_matches_sklearn_on_valid_rows():
  logits, labels = _predictions()
  mask = np.ones(len(labels), bool)
  mask[-13:] = False  # padding: must count for nothing
  logits[-13:] = 100.0  # ... even when it is absurd
  m = metrics.classification_metrics(logits, labels, mask)

  lg, y = logits[mask].astype(np.float64), labels[mask]
  probs = metrics.softmax(lg)
  pred = lg.argmax(-1)
  c = lg.shape[1]
  assert m["num_examples"] == mask.sum()
  np.testing.assert_allclose(m["loss"], skm.log_loss(y, probs, labels=range(c)), rtol=1e-6)
  assert m["top1"] == pytest.approx(skm.accuracy_score(y, pred))
  assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(y, lg, k=5, labels=range(c)))
  for ours, fn in (("macro_precision", skm.precision_score), ("macro_recall", skm.recall_score),
                   ("macro_f1", skm.f1_score)):
    assert m[ours] == pytest.approx(fn(y, pred, average="macro", zero_division=0)), ours
  assert m["auc_roc"] == pytest.approx(
      skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
  np.testing.assert_array_equal(m["confusion_matrix"], skm.confusion_matrix(y, pred, labels=range(c)))


def test_absent_class_follows_sklearn_macro_and_skips_auc():
  logits, labels = _predictions(absent=(2,), seed=1)
  m = metrics.classification_metrics(logits, labels)
  pred = logits.argmax(-1)
  assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, pred, average="macro", zero_division=0))
  probs = metrics.softmax(logits.astype(np.float64))
  present = [j for j in range(logits.shape[1]) if (labels == j).any()]
  expected = np.mean([skm.roc_auc_score(labels == j, probs[:, j]) for j in present])
  assert m["auc_roc"] == pytest.approx(expected)
  assert m["confusion_matrix"].shape == (7, 7)


def test_binary_auc_counts_ties_as_half_like_sklearn():
  rng = np.random.default_rng(2)
  y = rng.random(200) < 0.3
  scores = np.round(rng.random(200) + 0.3 * y, 1)  # many ties
  assert metrics.binary_auc(y, scores) == pytest.approx(skm.roc_auc_score(y, scores))


def test_top5_with_fewer_classes_is_one_and_all_masked_raises():
  logits, labels = _predictions(n=10, c=3)
  assert metrics.classification_metrics(logits, labels)["top5"] == 1.0
  with pytest.raises(ValueError, match="No valid examples"):
    metrics.classification_metrics(logits, labels, np.zeros(10))
