"""Pieces the experiment configs share (big_vision's ``configs/common.py``).

    from configs import common
    config = common.digits_resnet(train_config.get_base_config(), "uci_digits", warmup_steps=30)
    common.runlocal(config)        # seconds instead of minutes: 10 steps of batch 16
"""

from __future__ import annotations

from ml_collections import config_dict


def digits_resnet(config: config_dict.ConfigDict, dataset: str, *, warmup_steps: int,
                  eval_batch_size: int = 160) -> config_dict.ConfigDict:
  """The CPU-sized setup of the digits experiments: a narrow small-stem ResNet-18 (stages
  16-32-64-128) on 16×16 RGB, adamw 3e-3 with weight decay 1e-4, warmup + cosine, batch 64."""
  config.model.arch = "resnet18"
  config.model.small_stem = True
  config.model.base_planes = 16
  config.data.dataset = dataset
  config.data.image_size = 16
  config.data.batch_size = 64
  config.data.eval_batch_size = eval_batch_size
  config.optim.name = "adamw"
  config.optim.lr = 3e-3
  config.optim.weight_decay = 1e-4
  config.optim.schedule = "warmup_cosine"
  config.optim.warmup_steps = warmup_steps
  return config


def runlocal(config: config_dict.ConfigDict, *, steps: int = 10, every: int | None = None,
             batch_size: int = 16) -> config_dict.ConfigDict:
  """Shrinks an experiment to a smoke run: ``steps`` steps of ``batch_size``, evaluated and
  checkpointed every ``every`` (default: at the end), logged every 5, 2 warmup steps."""
  config.data.batch_size = batch_size
  config.train.num_steps = steps
  config.train.eval_every = every or steps
  config.train.ckpt_every = every or steps
  config.train.log_every = 5
  config.optim.warmup_steps = 2
  return config
