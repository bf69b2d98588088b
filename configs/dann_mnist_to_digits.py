"""Domain adaptation MNIST-5k (labeled) → UCI digits (unlabeled): DANN, or its source-only baseline.

    python -m jtransfer.main --config=configs/dann_mnist_to_digits.py --workdir=workdirs/dann_run
    python -m jtransfer.main --config=configs/dann_mnist_to_digits.py:source_only --workdir=workdirs/so_run
    python -m jtransfer.main --config=configs/dann_mnist_to_digits.py:runlocal --workdir=/tmp/d  # ~35 s
    python -m jtransfer.main --config=configs/dann_mnist_to_digits.py:source_only,runlocal --workdir=/tmp/s

Both train the narrow small-stem ResNet-18 of configs/pretrain_mnist5k.py (base_planes=16, 16×16
RGB) from scratch on MNIST-5k's labeled train split and are evaluated on UCI digits' test split
(450 images); no UCI digits label reaches training. 'dann' (Ganin & Lempitsky 2015) also feeds
UCI digits' train images (images only) through a gradient reversal layer to a 256-unit domain
classifier, with λ on the paper's schedule 2/(1+exp(−10p))−1. The domain head is not exported.

Here (2 CPU cores): source-only ~40 s, DANN ~65 s unloaded (each DANN step runs source and
target images), up to twice that when other jobs share the cores; runlocal ~35 s. Expected, from
configs/benchmark/dann.py (3 seeds, docs/adapt.md), UCI digits test top-1: source-only
34.8 ± 9.9 %, DANN 59.5 ± 19.8 % — the seeds spread widely, so compare means, not single runs.
"""

from configs import common
from jtransfer.train import config as train_config


def parse_arg(arg):
  parts = set(filter(None, (arg or "").split(",")))
  unknown = parts - {"dann", "source_only", "runlocal"}
  if unknown or {"dann", "source_only"} <= parts:
    raise ValueError(f"Unknown or conflicting config args {sorted(parts)}; use 'dann' (default) "
                     "or 'source_only', optionally with ',runlocal'")
  return ("source_only" if "source_only" in parts else "dann"), "runlocal" in parts


def get_config(arg=None):
  method, runlocal = parse_arg(arg)
  config = train_config.get_base_config()
  # MNIST-5k is the labeled source; UCI digits' test split (450) is evaluated in one batch.
  common.digits_resnet(config, "mnist5k", warmup_steps=50, eval_batch_size=450)
  config.train.num_steps = 400
  config.train.eval_every = 0              # the target's test split is not for model selection
  config.train.ckpt_every = 100
  config.train.export = "last"
  config.train.log_every = 50

  config.adapt.method = method
  config.adapt.target_dataset = "uci_digits"
  config.adapt.target_split = "train"
  config.adapt.domain_weight = 1.0
  config.adapt.lambda_schedule = "paper"
  config.adapt.gamma = 10.0
  config.adapt.domain_head = (256,)

  if runlocal:
    common.runlocal(config)
    config.train.eval_every = 0  # still: the target's test split only at the end
  return config
