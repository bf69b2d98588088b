"""The embedded demo (`make demo`): MNIST-5k → UCI digits, every transfer variant, 3 seeds.

    python -m jtransfer.benchmark --config=jtransfer/configs/benchmark/demo.py --workdir=workdirs/demo
    python -m jtransfer.benchmark --config=jtransfer/configs/benchmark/demo.py:quick --workdir=/tmp/q   # 1 seed, 2 shots

1. Pretrains a narrow small-stem ResNet-18 (base_planes=16, 16×16 RGB) on MNIST-5k
   (jtransfer/configs/pretrain_mnist5k.py) and keeps its export under WORKDIR/pretrain (reused when present).
2. Transfers it to UCI digits (1,797 8×8 digits, upsampled to 16×16) at 1, 5, 10 and all training
   examples per class, for every variant below, with 3 seeds (the seed picks the few-shot examples,
   the init of new layers and the data order).
3. Writes results.jsonl / results.csv / results.md / results.png in WORKDIR and prints the table.

Real data, no network; the README states the wall time measured on the 2-core CPU machine and the
numbers that came out. The known finding to compare against (Yosinski et al. 2014; Kornblith et al.
2019): pretrained variants beat from-scratch by a wide margin at low shots; the gap narrows with data.
"""

from ml_collections import config_dict

from jtransfer import optim
from jtransfer.benchmark.harness import variant as _variant
from jtransfer.configs import pretrain_mnist5k


def get_config(arg=None):
  steps = 60
  config = config_dict.ConfigDict()

  config.pretrain = config_dict.ConfigDict()
  config.pretrain.enabled = True
  config.pretrain.config = pretrain_mnist5k.get_config()

  # The base experiment every cell starts from: same model as the pretraining, new 10-way head.
  base = pretrain_mnist5k.get_config()
  base.data.dataset = "uci_digits"
  base.data.batch_size = 32
  base.data.eval_batch_size = 450
  base.data.repeat_small = True  # 1 shot x 10 classes < batch 32: repeat, logged
  base.optim.name = "adamw"
  base.optim.lr = 1e-3
  base.optim.weight_decay = 1e-4
  base.optim.schedule = "warmup_cosine"
  base.optim.warmup_steps = 5
  base.train.num_steps = steps
  base.train.eval_every = 0       # evaluate once, at the end: the test split is not for selection
  base.train.ckpt_every = 0
  base.train.export = "last"
  base.train.log_every = steps
  base.train.tensorboard = False
  base.train.progress = False
  config.base = base

  config.datasets = ("uci_digits",)
  config.shots = (1, 5, 10, "all")
  config.seeds = (0, 1, 2)
  config.shot_overrides = {}  # str(shots) -> (dotted key, value) pairs

  v = config_dict.ConfigDict()
  v.scratch = _variant("train", pretrained=False, overrides=(("optim.lr", 3e-3),))
  v.linear_probe_cached = _variant("linear_probe_cached", args={"steps": 300, "lr": 0.05})
  v.ridge = _variant("ridge", args={"l2_reg": 1.0})
  v.knn = _variant("knn", args={"k": 5})
  v.last_stage = _variant("train", freezing=optim.get_freezing_config("last_stages", k=1))
  v.full_finetune = _variant("train", freezing=optim.get_freezing_config("full_ft"))
  v.lp_ft = _variant("train", freezing=optim.get_freezing_config("lp_ft", switch_step=steps // 2),
                     overrides=(("optim.warmup_steps", 0),))
  v.l2sp = _variant("train", freezing=optim.get_freezing_config("l2sp", alpha=0.01, beta_head=0.01),
                    overrides=(("optim.weight_decay", 0.0),))
  v.llrd = _variant("train", freezing=optim.get_freezing_config("layerwise_decay", decay=0.5))
  # A 2× narrower student (base_planes=8, ¼ of the parameters) from scratch, taught by this cell's full fine-tune.
  v.distill = _variant("train", pretrained=False, teacher="full_finetune",
                       overrides=(("model.base_planes", 8), ("optim.lr", 3e-3),
                                  ("loss.distill.alpha", 0.5), ("loss.distill.temperature", 4.0)))
  config.variants = v
  # Run and display order (a distillation teacher must come before its student).
  config.order = ("scratch", "linear_probe_cached", "ridge", "knn", "last_stage", "full_finetune",
                  "lp_ft", "l2sp", "llrd", "distill")

  if arg == "quick":
    config.shots = (1, "all")
    config.seeds = (0,)
  return config
