"""The benchmark's zero-shot section (ESZSL over cached features): numbers, test-blindness, errors."""

import numpy as np
import pytest

from jtransfer.benchmark import zeroshot_section
from jtransfer.methods import zeroshot


def _features(y, attrs, rng, dim=40, noise=0.3):
  """Features that are a fixed linear map of the class's attributes, plus noise."""
  proj = np.random.default_rng(123).normal(size=(attrs.shape[1], dim))
  return attrs[y] @ proj + noise * rng.normal(size=(len(y), dim))


def _data():
  attrs = zeroshot.digit_attributes()
  rng = np.random.default_rng(0)
  y, ty = np.repeat(np.arange(10), 30), np.repeat(np.arange(10), 20)
  return attrs, (_features(y, attrs, rng), y), (_features(ty, attrs, rng), ty)


def test_unseen_classes_are_recognised_well_above_chance_when_attributes_decide_the_class():
  _, pool, test = _data()
  out = zeroshot_section.run({"splits": 3, "seeds": (0, 1)}, 10, pool=pool, test=test)
  s = out["summary"]
  assert s["zsl_unseen"]["n"] == 6
  assert s["zsl_unseen"]["mean"] > s["zsl_chance"]["mean"] + 0.3
  table = zeroshot_section.markdown({"uci_digits": out})
  assert "| uci_digits | 6 |" in table and "chance" in table


def test_the_test_labels_never_enter_the_choice_of_gamma_and_lambda():
  _, pool, test = _data()
  shuffled = (test[0], np.random.default_rng(1).permutation(test[1]))
  a = zeroshot_section.run({"splits": 3, "seeds": (0,)}, 10, pool=pool, test=test)
  b = zeroshot_section.run({"splits": 3, "seeds": (0,)}, 10, pool=pool, test=shuffled)
  assert [(r["gamma"], r["lam"]) for r in a["splits"]] == [(r["gamma"], r["lam"]) for r in b["splits"]]
  assert a["summary"]["zsl_unseen"]["mean"] != b["summary"]["zsl_unseen"]["mean"]


def test_bad_sections_and_attribute_tables_are_named():
  with pytest.raises(ValueError, match=r"unknown keys \['split'\]"):
    zeroshot_section.check({"split": 3})
  with pytest.raises(ValueError, match="splits=1 must be >= 2"):
    zeroshot_section.check({"splits": 1})
  with pytest.raises(ValueError, match="10-digit table, but the dataset has 5 classes"):
    zeroshot_section.attributes({"attributes": ""}, 5)
