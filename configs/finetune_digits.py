"""Fine-tune a narrow small-stem ResNet-18 on UCI digits: random init, or from a weights file.

    python -m jtransfer.main --config=configs/finetune_digits.py --workdir=workdirs/finetune_digits
    python -m jtransfer.main --config=configs/finetune_digits.py:runlocal --workdir=/tmp/digits
    # From the MNIST-5k pretraining (configs/pretrain_mnist5k.py); the new head is re-initialised:
    python -m jtransfer.main --config=configs/finetune_digits.py --workdir=workdirs/digits_ft \
        --config.model.init=workdirs/pretrain_mnist5k/export
    # Linear probe of the same weights:
    python -m jtransfer.main --config=configs/finetune_digits.py:linear_probe --workdir=... \
        --config.model.init=workdirs/pretrain_mnist5k/export

UCI digits (1,797 8×8 grey digits from scikit-learn, prepared offline as a TFDS dataset), upsampled
to 16×16 RGB; ResNet-18 with base_planes=16 (stages 16-32-64-128; a converted torchvision ResNet-18
needs --config.model.base_planes=64). Everything the trainer does is on: checkpoints every 100 steps
(resume by running the same command), eval of the whole test split every 100 steps, the best
checkpoint exported to WORKDIR/export, result.json, metrics.jsonl, TensorBoard, an EMA of the
parameters for evaluation.

Runtime on this 2-core CPU: about 1.5 min (runlocal: ~20 s, mostly compilation). Expected
eval top-1: ~0.97 from random init (runlocal: anything, it trains 10 steps).
"""

from configs import common
from jtransfer import optim
from jtransfer.train import config as train_config


def get_config(arg=None):
  """``arg``: '' (the experiment), 'runlocal' (10 steps), 'linear_probe' (head only)."""
  args = set(filter(None, (arg or "").split(",")))
  unknown = args - {"runlocal", "linear_probe"}
  if unknown:
    raise ValueError(f"Unknown config args {sorted(unknown)}; known: runlocal, linear_probe")
  config = train_config.get_base_config()
  # eval batch 160: divisible by 1-32 devices; the last batch is padded.
  common.digits_resnet(config, "uci_digits", warmup_steps=30, eval_batch_size=160)
  config.optim.ema_decay = 0.99
  config.loss.label_smoothing = 0.1
  config.train.num_steps = 300
  config.train.eval_every = 100
  config.train.ckpt_every = 100
  config.train.log_every = 25
  config.train.patience = 3
  if "linear_probe" in args:
    config.freezing = optim.get_freezing_config("linear_probe")
    config.optim.lr = 1e-2
  if "runlocal" in args:
    common.runlocal(config, every=5)
  return config
