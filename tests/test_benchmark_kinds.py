"""The benchmark's kind seam: a kind registered in one line runs through the runner unchanged."""

import json
import os

from ml_collections import config_dict
import pytest
import support

from jtransfer.benchmark import harness, kinds


class Toy(kinds.Kind):
  """Scores a grid point ``x`` as x/10 on validation and (x+1)/10 on test; trains nothing."""

  name = "toy"
  arg_names = frozenset({"x"})

  def check(self, config, name, v, grid, where):
    for p in grid:
      if not 0 <= p["x"] <= 9:
        raise ValueError(f"{where}: x={p['x']} outside 0..9")

  def fit(self, ctx, cell, point, splits):
    self.fitted.append((cell.id, point["x"], splits.val))
    return {"val": {"top1": point["x"] / 10}, "trainable_params": 0, "train_gflops": 0.0,
            "peak_bytes": None}

  def test(self, ctx, cell, chosen, splits):
    top1 = (chosen["point"]["x"] + 1) / 10
    return {None: {"top1": top1}, **{s: {"top1": top1 / 2} for s in (("contrast", 1),)}}

  def finish_row(self, ctx, cell, chosen, row):
    row["toy_x"] = chosen["point"]["x"]


def _config(xs):
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": False})
  c.base = support.tiny_experiment("uci_digits", 1)
  c.datasets = ("uci_digits",)
  c.shots = (1,)
  c.seeds = (0, 1)
  c.shot_overrides = {}
  c.shifts = (("contrast", 1),)
  c.variants = config_dict.ConfigDict({"toy": harness.variant("toy", search={"x": xs})})
  c.order = ("toy",)
  c.protocol = config_dict.ConfigDict({"comparisons": ()})
  return c


@pytest.fixture
def toy(monkeypatch):
  kind = Toy()
  kind.fitted = []
  monkeypatch.setitem(kinds.KINDS, "toy", kind)  # the one registration line
  return kind


def test_a_registered_kind_runs_through_the_runner(toy, tmp_path):
  with open(os.devnull, "w") as sink:
    rows = harness.run(_config((1, 3, 2)), str(tmp_path), stream=sink)
  assert [r["cell"] for r in rows] == ["uci_digits/toy/shots-1/seed-0",
                                       "uci_digits/toy/shots-1/seed-1"]
  for r in rows:  # chosen on validation (x=3), tested once, its own column added
    assert r["chosen"] == {"x": 3} and r["val_top1"] == 0.3 and r["test_top1"] == 0.4
    assert r["ood"] == {"contrast-1": 0.2} and r["toy_x"] == 3 and r["budget"] == 3
  assert len(toy.fitted) == 6 and all(v.startswith("train[") for _, _, v in toy.fitted)
  with open(tmp_path / "trials.jsonl") as f:
    assert len([json.loads(l) for l in f]) == 6
  assert (tmp_path / "results.md").exists()
  # A restart finds every trial and cell done: nothing is fitted again.
  toy.fitted.clear()
  with open(os.devnull, "w") as sink:
    again = harness.run(_config((1, 3, 2)), str(tmp_path), stream=sink)
  assert toy.fitted == [] and [r["cell"] for r in again] == [r["cell"] for r in rows]


def test_a_kind_checks_its_arguments_before_anything_runs(toy, tmp_path):
  with pytest.raises(ValueError, match=r"variants.toy: x=12 outside 0..9"):
    harness.run(_config((1, 12)), str(tmp_path))
  with pytest.raises(ValueError, match=r"variants.toy: toy takes \['x'\]; got \['y'\]"):
    c = _config((1,))
    c.variants.toy.args = {"y": 1}
    harness.run(c, str(tmp_path))
  assert toy.fitted == [] and not (tmp_path / "trials.jsonl").exists()


def test_an_unknown_kind_names_the_known_ones(tmp_path):
  c = _config((1,))
  c.variants.toy.kind = "nope"
  with pytest.raises(ValueError, match=r"variants.toy.kind='nope'; known: train, surgical"):
    harness.validate(c)
