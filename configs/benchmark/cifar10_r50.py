"""CIFAR-10 from a converted torchvision ResNet-50: five transfer variants × 1–all shots × 3 seeds.

    # Weights and data as in configs/cifar10_r50.py (convert once, `tfds build cifar10` once), then:
    python -m jtransfer.benchmark --config=configs/benchmark/cifar10_r50.py --workdir=workdirs/bench_c10_r50 \
        --config.base.data.data_dir=$HOME/tfds --config.base.model.init=weights/resnet50
    python -m jtransfer.benchmark --config=configs/benchmark/cifar10_r50.py:quick --workdir=/tmp/bq \
        --config.base.data.data_dir=$HOME/tfds       # 1 seed, 5 shots and all: a first look

No pretraining step: every pretrained cell starts from ``base.model.init`` (the converted
weights). Each cell is configs/cifar10_r50.py's full-data experiment (BiT-HyperRule: 160 → 128 px,
SGD momentum, lr 0.003, 10,000 steps with mixup 0.1 for all 50,000 images) with, for 1/5/10/25
examples per class, BiT's small-data schedule (500 steps, warmup 100, decays at 200/300/400, no
mixup), taken from that file's ``Nshot`` config. The seed picks the few-shot examples, the new
head's init and the data order; each cell is evaluated once, at its end, on the 10,000 test images
(the test split picks nothing). The harness's default protocol holds out the last 20 % of the
train split as validation (docs/benchmark.md), so 'all' trains on 40,000 images and the few-shot
draws come from those; no variant here searches a grid, so validation is only reported. A killed
benchmark resumes where it stopped.

Variants:
  linear_probe_cached  softmax regression (full-batch Adam) on cached pre_logits features
  ridge                closed-form ridge regression on the same features (big_vision's few-shot)
  last_stage           layer4 + head trained, the rest (and its BatchNorm statistics) frozen
  full_finetune        every layer trained
  lp_ft                head only for 250 steps at 10× the lr, then everything (Kumar et al. 2022)
The features are the eval preprocessing's (128 px, no augmentation), extracted once for the train
and test splits and cached in WORKDIR/features.

Runtime on one modern accelerator (A100/H100-class GPU or TPU v3-8/v4-8), an ESTIMATE, not a
measurement: 36 few-shot training runs of 500 steps (≈ 1–3 min each with compilation and the test
pass) ≈ 1–1.5 h; 9 full-data runs of 10,000 steps (≈ 20–40 min each, last_stage about half) ≈
3–5 h; features and the 30 feature cells: minutes. In all ≈ 4–6 h (``quick``: ≈ 1–2 h).

To compare against: BiT-M-R50x1 (ImageNet-21k weights) reaches 97.3 % with all of CIFAR-10 and
82.4 % with 5 examples per class (Kolesnikov et al. 2020). These ImageNet-1k weights should come in
lower, most of all at 1–25 shots. The known shape of the result (Kornblith et al. 2019; Kumar et al.
2022): fine-tuning beats the frozen-feature variants with all the data, the gap shrinks (and can
flip) at few shots, and LP-FT is at least as good as fine-tuning.
"""

from ml_collections import config_dict

from configs import cifar10_r50
from jtransfer import optim
from jtransfer.benchmark.harness import variant as _variant

# What BiT-HyperRule changes for fewer than 20,000 examples, read from configs/cifar10_r50.py.
FEWSHOT_KEYS = ("train.num_steps", "optim.warmup_steps", "optim.decay_boundaries",
                "data.mixup_alpha")


def _get(cfg, dotted):
  for key in dotted.split("."):
    cfg = cfg[key]
  return cfg


def get_config(arg=None):
  """``arg``: '' (the grid) or 'quick' (seed 0, 5 shots and all)."""
  if arg not in (None, "", "quick"):
    raise ValueError(f"Unknown config arg {arg!r}; known: quick")
  experiment = cifar10_r50
  config = config_dict.ConfigDict()

  config.pretrain = config_dict.ConfigDict()
  config.pretrain.enabled = False  # the converted weights are the pretrained model

  base = experiment.get_config()  # full data: 10,000 steps, mixup 0.1
  base.data.repeat_small = True  # 1-25 shots x 10 classes < batch 512: repeat, logged
  base.train.eval_every = 0       # evaluate once, at the end: the test split is not for selection
  base.train.tensorboard = False
  base.train.progress = False
  config.base = base

  config.datasets = ("cifar10",)
  config.shots = (1, 5, 10, 25, "all")
  config.seeds = (0, 1, 2)
  few = experiment.get_config("1shot")
  # str(shots) -> (dotted key, value) pairs: BiT's 500-step schedule below 20k examples.
  config.shot_overrides = {str(s): tuple((k, _get(few, k)) for k in FEWSHOT_KEYS)
                           for s in config.shots if s != "all"}

  v = config_dict.ConfigDict()
  v.linear_probe_cached = _variant("linear_probe_cached", args={"steps": 500, "lr": 0.05})
  v.ridge = _variant("ridge", args={"l2_reg": 1.0})
  v.last_stage = _variant("train", freezing=optim.get_freezing_config("last_stages", k=1))
  v.full_finetune = _variant("train", freezing=optim.get_freezing_config("full_ft"))
  # 250 head-only steps fit both the 500-step and the 10,000-step schedules.
  v.lp_ft = _variant("train", freezing=optim.get_freezing_config("lp_ft", switch_step=250,
                                                                 lp_lr_mult=10.0))
  config.variants = v
  config.order = ("linear_probe_cached", "ridge", "last_stage", "full_finetune", "lp_ft")

  if arg == "quick":
    config.shots = (5, "all")
    config.seeds = (0,)
  return config
