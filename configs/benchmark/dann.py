"""Domain adaptation benchmark: MNIST-5k (labeled) → UCI digits (unlabeled), source-only vs DANN.

    python -m jtransfer.benchmark --config=configs/benchmark/dann.py --workdir=workdirs/dann
    python -m jtransfer.benchmark --config=configs/benchmark/dann.py:quick --workdir=/tmp/dq  # 1 seed

Each cell trains configs/dann_mnist_to_digits.py from scratch (no pretraining) on MNIST-5k's
labeled train split and evaluates on UCI digits' test split; the cell's dataset ('uci_digits') is
the TARGET, and the variants set `data.dataset='mnist5k'` (the source) after the harness has put
the cell's dataset there. `dann` also sees UCI digits' train images, never their labels.
Seeds 0, 1, 2 pick the init and the data order.

Here (2 CPU cores): 9 min for the 6 runs with other jobs loading the cores, ≈ 6 min unloaded.
Result (docs/adapt.md), UCI digits test top-1, mean ± sample std over the 3 seeds:
source-only 34.8 ± 9.9 %, DANN 59.5 ± 19.8 %.
"""

from ml_collections import config_dict

from configs import dann_mnist_to_digits
from jtransfer.benchmark.harness import variant


def _variant(method):
  # The harness sets data.dataset to the cell's dataset (the target); these put the labeled
  # source back and name the target. Random init: no pretraining run.
  return variant("train", init="scratch",
                 overrides=(("data.dataset", "mnist5k"), ("adapt.method", method),
                            ("adapt.target_dataset", "uci_digits")))


def get_config(arg=None):
  config = config_dict.ConfigDict()
  config.pretrain = config_dict.ConfigDict()
  config.pretrain.enabled = False

  base = dann_mnist_to_digits.get_config("dann")
  base.train.ckpt_every = 0
  base.train.log_every = base.train.num_steps
  base.train.tensorboard = False
  base.train.progress = False
  config.base = base

  config.datasets = ("uci_digits",)  # the target, evaluated on its test split
  config.shots = ("all",)
  config.seeds = (0, 1, 2)
  config.shot_overrides = {}

  # No held-out selection: both variants are single fixed points, and choosing anything on
  # labeled target data would break the unsupervised-adaptation premise. val_fraction = 0 keeps
  # the source's whole train split and evaluates once on the target's test split.
  config.protocol = config_dict.ConfigDict({
      "val_fraction": 0.0,
      "comparisons": (("DANN vs source-only, on the target", "dann", "source_only", "test"),)})
  config.shifts = ()

  config.variants = config_dict.ConfigDict({"source_only": _variant("source_only"),
                                            "dann": _variant("dann")})
  config.order = ("source_only", "dann")
  if arg == "quick":
    config.seeds = (0,)
  return config
