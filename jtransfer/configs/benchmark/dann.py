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

import importlib.util
import os

from ml_collections import config_dict


def _experiment_config(arg):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "dann_mnist_to_digits.py")
  spec = importlib.util.spec_from_file_location("dann_mnist_to_digits", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _variant(method):
  v = config_dict.ConfigDict()
  v.kind = "train"         # the trainer
  v.pretrained = False     # random init: no pretraining run
  v.freezing = config_dict.placeholder(config_dict.ConfigDict)  # the base's (full_ft)
  # The harness sets data.dataset to the cell's dataset (the target); these put the labeled
  # source back and name the target.
  v.overrides = (("data.dataset", "mnist5k"), ("adapt.method", method),
                 ("adapt.target_dataset", "uci_digits"))
  v.teacher = ""
  v.args = {}
  return v


def get_config(arg=None):
  config = config_dict.ConfigDict()
  config.pretrain = config_dict.ConfigDict()
  config.pretrain.enabled = False

  base = _experiment_config("dann")
  base.train.ckpt_every = 0
  base.train.log_every = base.train.num_steps
  base.train.tensorboard = False
  base.train.progress = False
  config.base = base

  config.datasets = ("uci_digits",)  # the target, evaluated on its test split
  config.shots = ("all",)
  config.seeds = (0, 1, 2)
  config.shot_overrides = {}

  config.variants = config_dict.ConfigDict({"source_only": _variant("source_only"),
                                            "dann": _variant("dann")})
  config.order = ("source_only", "dann")
  if arg == "quick":
    config.seeds = (0,)
  return config
