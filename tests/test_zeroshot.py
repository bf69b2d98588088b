"""Zero-shot transfer: ESZSL's closed form, the protocol's splits and selection, attribute files."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jtransfer.methods import zeroshot
from jtransfer.methods.zeroshot import attributes, eszsl


def _vectorised_lstsq(x, y_pm, s, gamma, lam):
  """ESZSL's objective written as one least-squares problem in vec(V) (column-major vec):
  vec(X V Sᵀ) = (S ⊗ X) vec(V), vec(V Sᵀ) = (S ⊗ I) vec(V), vec(X V) = (I ⊗ X) vec(V)."""
  d, a = x.shape[1], s.shape[1]
  design = np.concatenate([
      np.kron(s, x),
      np.sqrt(gamma) * np.kron(s, np.eye(d)),
      np.sqrt(lam) * np.kron(np.eye(a), x),
      np.sqrt(gamma * lam) * np.eye(d * a)])
  target = np.concatenate([y_pm.flatten(order="F"), np.zeros(len(design) - y_pm.size)])
  vec_v = np.linalg.lstsq(design, target, rcond=None)[0]
  return vec_v.reshape(d, a, order="F")


@pytest.mark.parametrize("n,d", [(9, 4), (3, 6)])  # primal and dual branch of fit
def test_closed_form_equals_a_direct_least_squares_solve(n, d):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d))
  s = rng.normal(size=(3, 2))
  y = rng.integers(0, 3, n)
  v = eszsl.fit(x, y, s, gamma=0.7, lam=1.3)
  expected = _vectorised_lstsq(x, 2.0 * np.eye(3)[y] - 1.0, s, 0.7, 1.3)
  np.testing.assert_allclose(v, expected, rtol=1e-8, atol=1e-10)
  np.testing.assert_allclose(eszsl.predict(x, v, s), x @ expected @ s.T, rtol=1e-8, atol=1e-10)
  # The grid search's spectral shortcut gives the same V.
  (_, _, v_grid), = eszsl._grid_fits(x, y, s, [0.7], [1.3], "pm1")
  np.testing.assert_allclose(v_grid, v, rtol=1e-8, atol=1e-10)


def _synthetic(num_classes=10, num_attributes=4, dim=24, per_class=40, seed=2):
  """Each class is a distinct ±1 attribute code (equal norms, so no class wins by scale) and its
  features are a fixed linear image of that code plus noise: the class is determined by its
  attributes, so a good zero-shot learner must recognise unseen classes."""
  rng = np.random.default_rng(seed)
  codes = rng.choice(2 ** num_attributes, num_classes, replace=False)
  attrs = 2.0 * ((codes[:, None] >> np.arange(num_attributes)) & 1) - 1.0
  w = rng.normal(size=(num_attributes, dim))

  def make(n):
    y = np.repeat(np.arange(num_classes), n)
    return attrs[y] @ w + 0.5 * rng.normal(size=(len(y), dim)), y
  (tx, ty), (ex, ey) = make(per_class), make(per_class // 2)
  return tx, ty, ex, ey, attrs


def test_unseen_accuracy_is_far_above_chance_when_attributes_determine_the_class():
  tx, ty, ex, ey, attrs = _synthetic()
  out = zeroshot.zero_shot_protocol(tx, ty, ex, ey, attrs, splits=3, seed=0)
  summary = out["summary"]
  assert summary["zsl_unseen"]["n"] == 3
  assert summary["zsl_chance"]["mean"] == pytest.approx(np.mean([1 / 4, 1 / 3, 1 / 3]))
  assert summary["zsl_unseen"]["mean"] > 0.9
  assert summary["gzsl_chance"]["mean"] == pytest.approx(0.1)
  for r in out["splits"]:
    assert 0 <= r["gzsl_h"] <= max(r["gzsl_seen"], r["gzsl_unseen"])
  # With the rows shuffled (each class described as another) it fails: the signal is the attributes.
  shuffled = np.random.default_rng(1).permutation(attrs)
  null = zeroshot.zero_shot_protocol(tx, ty, ex, ey, shuffled, splits=3, seed=0)["summary"]
  assert null["zsl_unseen"]["mean"] < summary["zsl_unseen"]["mean"] - 0.3


def test_selection_never_reads_unseen_classes_or_test_data():
  tx, ty, ex, ey, attrs = _synthetic()
  seen, unseen = zeroshot.class_splits(10, splits=3, seed=0)[0]
  base = zeroshot.evaluate_split(tx, ty, ex, ey, attrs, seen=seen, unseen=unseen)
  garbage = tx.copy()
  garbage[np.isin(ty, unseen)] = 1e3 * np.random.default_rng(5).normal(
      size=(np.isin(ty, unseen).sum(), tx.shape[1]))
  other_test = ex + np.random.default_rng(6).normal(size=ex.shape)
  changed = zeroshot.evaluate_split(garbage, ty, other_test, ey, attrs, seen=seen, unseen=unseen)
  assert (changed["gamma"], changed["lam"]) == (base["gamma"], base["lam"])
  # Unseen training examples are not even used for the standardisation: only test data moved.
  same = zeroshot.evaluate_split(garbage, ty, ex, ey, attrs, seen=seen, unseen=unseen)
  assert same == base


def test_select_picks_from_the_grid_on_class_disjoint_folds():
  tx, ty, _, _, attrs = _synthetic()
  gamma, lam, grid = eszsl.select(tx, ty, attrs, gammas=(0.1, 10.0), lams=(0.01, 1.0), folds=3)
  assert grid.shape == (2, 2) and (gamma, lam) in [(g, l) for g in (0.1, 10.0) for l in (0.01, 1.0)]
  assert grid.max() > 0.8
  with pytest.raises(ValueError, match="folds"):
    eszsl.select(tx[ty < 3], ty[ty < 3], attrs[:3], folds=2)


def test_class_splits_are_deterministic_disjoint_and_covering():
  a = zeroshot.class_splits(10, splits=3, seed=7)
  b = zeroshot.class_splits(10, splits=3, seed=7)
  c = zeroshot.class_splits(10, splits=3, seed=8)
  assert all(np.array_equal(u1, u2) and np.array_equal(s1, s2) for (s1, u1), (s2, u2) in zip(a, b))
  assert any(not np.array_equal(u1, u2) for (_, u1), (_, u2) in zip(a, c))
  unseen = np.concatenate([u for _, u in a])
  assert sorted(unseen.tolist()) == list(range(10))
  for seen, u in a:
    assert not set(seen) & set(u) and sorted([*seen, *u]) == list(range(10)) and len(u) >= 3
  with pytest.raises(ValueError, match="splits"):
    zeroshot.class_splits(10, splits=6, seed=0)


def test_digit_table_loads_and_matches_its_documented_values():
  table = zeroshot.digit_attributes()
  names = attributes.attribute_names(attributes.DIGIT_ATTRIBUTES_CSV)
  assert table.shape == (10, 11) and names == list(attributes.DIGIT_ATTRIBUTES)
  assert len({tuple(r) for r in table}) == 10
  # The values written in the module docstring's table are the file's.
  for name, column in zip(names, table.T):
    line = re.search(rf"^{name} +((?:[\d.]+ +){{10}})", attributes.__doc__, re.M)
    assert line, name
    np.testing.assert_array_equal([float(v) for v in line.group(1).split()], column, err_msg=name)


GOOD = "class,a,b\nzero,0,1\none,1,0\ntwo,1,1\n"


@pytest.mark.parametrize("text,num_classes,match", [
    (GOOD, 4, r"3 rows of class attributes, expected one per class \(4\)"),
    ("class,a,b\nzero,0,1\none,nan,0\ntwo,1,1\n", 3, r"line 3 \(class 1\), column 'a'.*not finite"),
    ("class,a,b\nzero,0,1\none,x1,0\ntwo,1,1\n", 3, r"line 3, column 'a': 'x1' is not a number"),
    ("class,a,b\nzero,0,1\none,1,1\ntwo,2,1\n", 3, r"column 'b' is constant"),
    ("class,a,b\nzero,0,1\none,1,0\ntwo,0,1\n", 3, r"line 2 and line 4 \(classes 0 and 2\) are "
     "identical"),
    ("class,a,b\nzero,0,1\none,1\ntwo,1,1\n", 3, r"line 3 has 2 fields, the header has 3"),
    ("# only a comment\n", 3, r"empty attribute file"),
])
def test_csv_validation_names_the_file_and_the_place(tmp_path, text, num_classes, match):
  path = tmp_path / "attrs.csv"
  path.write_text(text)
  with pytest.raises(ValueError, match=match) as e:
    attributes.load_attributes(path, num_classes)
  assert str(path) in str(e.value)


def test_csv_and_npy_load_the_same_table(tmp_path):
  csv_path = tmp_path / "attrs.csv"
  csv_path.write_text("# comment\n" + GOOD)
  np.save(tmp_path / "emb.npy", np.array([[0, 1], [1, 0], [1, 1]], np.float32))
  expected = [[0, 1], [1, 0], [1, 1]]
  np.testing.assert_array_equal(attributes.load_attributes(csv_path, 3), expected)
  np.testing.assert_array_equal(attributes.load_attributes(tmp_path / "emb.npy", 3), expected)
  # A header without a class column: every column is an attribute.
  plain = tmp_path / "plain.csv"
  plain.write_text("a,b\n0,1\n1,0\n1,1\n")
  np.testing.assert_array_equal(attributes.load_attributes(plain, 3), expected)


@pytest.mark.parametrize("array,match", [
    (np.ones((3,)), r"expected a 2-D array"),
    (np.array([[0.0, 1], [np.inf, 0], [1, 1]]), r"row 1 \(class 1\), column '0'.*not finite"),
    (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), r"non-numeric"),
    (np.array([[0.0, 2], [1, 2], [3, 2]]), r"column '1' is constant"),
])
def test_npy_validation(tmp_path, array, match):
  path = tmp_path / "emb.npy"
  np.save(path, array)
  with pytest.raises(ValueError, match=match) as e:
    attributes.load_attributes(path, 3)
  assert str(path) in str(e.value)
  with pytest.raises(ValueError, match=r"unknown attribute file type '.txt'"):
    attributes.load_attributes(tmp_path / "emb.txt", 3)
