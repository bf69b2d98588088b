"""True few-shot selection (protocol.selection = 'within_draw'): k-shot cells read no label beyond
their draw — feature classifiers cross-validate inside it, trained variants run their first grid
point — and every row says how many labels its selection used."""

import json
import os

from ml_collections import config_dict
import support

from jtransfer import optim
from jtransfer.benchmark import harness
from jtransfer.data import sources


def _config():
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": False})
  c.base = support.tiny_experiment("uci_digits", 2)
  c.datasets = ("uci_digits",)
  c.shots = (3, "all")
  c.seeds = (0,)
  c.shot_overrides = {}
  c.protocol = config_dict.ConfigDict({"val_per_class": 10, "selection": "within_draw"})
  c.shifts = ()
  c.variants = config_dict.ConfigDict({
      "ridge": harness.variant("pixels_ridge", search={"l2_reg": (0.01, 1.0, 100.0)}),
      "ft": harness.variant("train", freezing=optim.get_freezing_config("full_ft"),
                            search={"optim.lr": (1e-3, 3e-2)}, shots=(3,)),
  })
  c.order = ("ridge", "ft")
  return c


def test_k_shot_cells_select_inside_the_draw(tmp_path, monkeypatch):
  opened = []
  original = sources.open_split

  def open_split(cfg, split=None, *, train=False):
    opened.append(split or (cfg.train_split if train else cfg.eval_split))
    return original(cfg, split, train=train)

  monkeypatch.setattr(sources, "open_split", open_split)
  with open(os.devnull, "w") as sink:
    rows = harness.run(_config(), str(tmp_path), stream=sink)
  by = {(r["variant"], r["shots"]): r for r in rows}
  ridge3, ft3, ridge_all = by["ridge", 3], by["ft", 3], by["ridge", "all"]
  assert ridge3["selection"] == "within_draw" and ridge3["budget"] == 3
  assert ridge3["selection_labels"] == 0 and ridge3["metrics"]["num_examples"] == 450
  assert ft3["selection"] == "rule" and ft3["budget"] == 1 and ft3["selection_labels"] == 0
  assert ft3["chosen"] == {"optim.lr": 1e-3}  # the first grid point: the declared rule
  # 'all' cells are not few-shot: they still select on the held-out validation slice.
  assert ridge_all["selection"] == "val" and ridge_all["selection_labels"] > 0
  # The ridge trials of the 3-shot cell scored by cross-validation, not on validation.
  splits = harness.splits_for(_config(), "uci_digits", 3)
  trials = [r for r in _trials(tmp_path) if r["cell"] == ridge3["cell"]]
  assert len(trials) == 3 and all(t["val"]["cross_validated"] for t in trials)
  assert splits.val in opened  # read by the trained variant's end-of-run evaluation only


def _trials(workdir):
  with open(os.path.join(workdir, "trials.jsonl")) as f:
    return [json.loads(line) for line in f]
