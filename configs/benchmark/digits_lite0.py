"""ImageNet EfficientNet-Lite0 → UCI digits at 32 px, every transfer variant, 3 seeds: the demo
before it moved to Fashion-MNIST (configs/benchmark/demo.py), kept as the second target and as the
base of the FedAvg, Reptile and zero-shot benchmarks. On 8×8 digits raw pixels beat every transfer
row (1-NN: 64 / 83 / 95 % at 1 / 5 / all per class; README), so read it as a test bed, not as
evidence for transfer.

    python -m jtransfer.benchmark --config=configs/benchmark/digits_lite0.py --workdir=workdirs/digits
    python -m jtransfer.benchmark --config=configs/benchmark/digits_lite0.py:mnist --workdir=workdirs/digits_mnist
    python -m jtransfer.benchmark --config=configs/benchmark/digits_lite0.py:resnet --workdir=workdirs/digits_resnet
    python -m jtransfer.benchmark --config=configs/benchmark/digits_lite0.py:quick --workdir=/tmp/q   # smoke

Args (comma-separated): '' (default) the real ImageNet EfficientNet-Lite0 weights
(`model.init = "pkg:efficientnet_lite0"`, the pip package's checkpoint, converted on load) moved
to UCI digits (1,797 8×8 digits, upsampled); 'mnist' adds MNIST-5k as a second target (longer);
'resnet' the self-pretrained path instead (a narrow small-stem ResNet-18 pretrained on MNIST-5k
here first, 16 px); 'quick' one seed, one shot count and the smallest grids, for tests and smoke.

Protocol (docs/benchmark.md): the train split's first 80 % is the pool the few-shot examples are
drawn from, the last 20 % is validation (at most 20 per class for k-shot cells); every variant
picks its grid point by validation top-1, and only that point is evaluated on the test split and
on three corrupted copies of it (the OOD columns). 1, 5 and all examples per class × 3 seeds (a
seed = the few-shot draw, the head init and the data order).

Writes results.{jsonl,csv,md,png}, summary.csv, trials.jsonl, comparisons.md, cost.png and
ood.png in WORKDIR. Runtime on the shared 2-core CPU machine and the numbers that came out:
docs/benchmark.md. The known findings to compare against: pretrained ≫ scratch at low shots
(Yosinski et al. 2014; Kornblith et al. 2019); LP-FT ≥ FT, above all out of distribution (Kumar
et al. 2022); WiSE-FT improves OOD at little ID cost (Wortsman et al. 2022); the best stage for
surgical fine-tuning depends on the shift (Lee et al. 2023).
"""

from ml_collections import config_dict

from configs import pretrain_mnist5k
from jtransfer import optim
from jtransfer.benchmark.harness import variant as _variant
from jtransfer.train import config as train_config

ARGS = ("quick", "mnist", "resnet")
# EfficientNet-Lite's input normalisation: (pixels - 127.5) / 128 (models.get_spec(...).normalize).
LITE_NORM = {"mean": 0.5, "std": 128 / 255}
# Raw pixel range per dataset: uci_digits stores 0..16.
IN_MAX = {"uci_digits": 16.0, "mnist5k": 255.0}


def _parse(arg):
  tokens = tuple(t for t in (arg or "").split(",") if t)
  bad = sorted(set(tokens) - set(ARGS))
  if bad:
    raise ValueError(f"demo config arg {bad}: known {ARGS}")
  return set(tokens)


def pp(dataset: str, size: int, norm: dict, *, train: bool) -> list:
  ops = ["decode", {"op": "resize", "size": size}, "grayscale_to_rgb"]
  if train:
    ops.append({"op": "random_crop", "size": size, "padding": size // 8})
  return ops + [{"op": "normalize", "in_max": IN_MAX[dataset], **norm}]


def freezing_for(resnet: bool, strategy: str, **args):
  """A pretrained variant's freezing. Lite0: every BatchNorm on its running (ImageNet) statistics
  (bn_mode='running': 12 steps of batch 16 would otherwise train a network with batch statistics
  and evaluate it with barely moved running ones), and the new head at 30× the base learning rate
  (it starts from random; the backbone from ImageNet). Measured on validation, 5-shot, 12 steps:
  full fine-tune 18 % with the old recipe's best point, 41.5 % with running statistics."""
  if not resnet and strategy in ("full_ft", "l2sp", "last_stages", "layerwise_decay"):
    args.setdefault("head_lr_mult", HEAD_LR_MULT)
  if not resnet and strategy == "lp_ft":
    args.setdefault("lp_lr_mult", HEAD_LR_MULT)
  fz = optim.get_freezing_config(strategy, **args)
  if not resnet:
    fz.bn_mode = "running"
  return fz


HEAD_LR_MULT = 30.0


def _base_common(base, steps: int) -> None:
  base.data.batch_size = 16
  base.data.eval_batch_size = 250
  base.data.repeat_small = True  # 1 shot x 10 classes < batch 16: repeat, logged
  base.optim.name = "adamw"
  base.optim.lr = 3e-3
  base.optim.weight_decay = 1e-4
  base.optim.schedule = "warmup_cosine"
  base.optim.warmup_steps = 2
  base.train.num_steps = steps
  base.train.eval_every = 0       # one evaluation at the end, on the VALIDATION split
  base.train.ckpt_every = 0
  base.train.export = "last"
  base.train.log_every = steps
  base.train.tensorboard = False
  base.train.progress = False


def get_config(arg=None):
  args = _parse(arg)
  resnet = "resnet" in args
  steps = 40 if resnet else 12
  config = config_dict.ConfigDict()

  config.pretrain = config_dict.ConfigDict()
  config.pretrain.enabled = resnet
  config.pretrain.config = pretrain_mnist5k.get_config()

  if resnet:  # same model as the pretraining, new 10-way head (16 px, ImageNet mean/std)
    base = pretrain_mnist5k.get_config()
    base.data.dataset = "uci_digits"
    size, norm = base.data.image_size, {}
    student = (("model.base_planes", 8),)
  else:
    base = train_config.get_base_config()
    base.model.arch = "efficientnet_lite0"
    base.model.init = "pkg:efficientnet_lite0"  # ImageNet weights from the installed package
    base.data.dataset = "uci_digits"
    size, norm = 32, LITE_NORM
    base.data.image_size = size
    # A ResNet-18 with 8 base planes (~0.7 M parameters vs Lite0's 3.4 M), from scratch.
    student = (("model.arch", "resnet18"), ("model.small_stem", True), ("model.base_planes", 8))
  _base_common(base, steps)
  if not resnet:  # pretrained variants: lr 3e-4 (the head 30x), BatchNorms on running statistics
    base.optim.lr = 3e-4
    base.freezing = freezing_for(resnet, "full_ft")
  config.base = base

  config.datasets = ("uci_digits", "mnist5k") if "mnist" in args else ("uci_digits",)
  # Per dataset: its pixel range in the pp lists.
  config.dataset_overrides = {
      d: (("data.pp_train", pp(d, size, norm, train=True)),
          ("data.pp_eval", pp(d, size, norm, train=False))) for d in IN_MAX}
  config.shots = (1, 5, "all")
  config.seeds = (0, 1, 2)
  config.shot_overrides = {}  # str(shots) -> (dotted key, value) pairs

  # Held-out selection (harness.default_protocol): pool = first 80 % of train, validation = the
  # rest, at most 20 per class for k-shot cells.
  config.protocol = config_dict.ConfigDict()
  config.protocol.val_fraction = 0.2
  config.protocol.val_per_class = 20
  config.protocol.level = 0.95
  config.protocol.comparisons = (
      ("fine-tuning vs from scratch", "full_finetune", "scratch", "test"),
      ("fine-tuning vs ridge probe", "full_finetune", "ridge", "test"),
      ("WiSE-FT vs its fine-tune, OOD", "wise_ft", "full_finetune", "ood"),
  )
  # Shifted test sets (jtransfer.data.corruptions), evaluated only: (name, severity).
  config.shifts = (("gaussian_noise", 3), ("contrast", 3), ("rotate", 2))
  config.shift_seed = 0

  lrs = (3e-3, 1e-2) if resnet else (1e-4, 3e-4, 1e-3)
  # From scratch: every BatchNorm trains its statistics (random ones mean nothing), lr 3e-3.
  scratch_fz = (("freezing", optim.get_freezing_config("full_ft")), ("optim.lr", 3e-3))
  v = config_dict.ConfigDict()
  v.scratch = _variant("train", init="scratch", selection="fixed", overrides=scratch_fz)
  v.ridge = _variant("ridge", search={"l2_reg": (0.1, 1.0, 10.0, 100.0)})
  v.knn = _variant("knn", search={"k": (1, 3, 10)})
  v.linear_probe_cached = _variant("linear_probe_cached", args={"steps": 200},
                                   search={"lr": (0.01, 0.1)})
  # Prototypical networks' classifier (nearest class mean), cosine or Euclidean on validation.
  v.ncm = _variant("ncm", search={"cosine": (True, False)})
  v.last_stage = _variant("train", freezing=freezing_for(resnet, "last_stages", k=2),
                          selection="fixed")
  # The learning rate is an input of the compiled step: the grid shares one program.
  v.full_finetune = _variant("train", freezing=freezing_for(resnet, "full_ft"),
                             search={"optim.lr": lrs})
  # The two-phase preset (head-only steps, then all): a budget-split heuristic, not the paper's
  # LP-FT, whose probe is fitted to convergence (kind 'lp_ft', as in configs/benchmark/demo.py).
  v.lp_ft = _variant("train", freezing=freezing_for(resnet, "lp_ft", switch_step=steps // 2),
                     overrides=(("optim.warmup_steps", 0),), selection="fixed")
  v.l2sp = _variant("train", freezing=freezing_for(resnet, "l2sp", alpha=0.01, beta_head=0.01),
                    overrides=(("optim.weight_decay", 0.0),), selection="fixed")
  v.llrd = _variant("train", freezing=freezing_for(resnet, "layerwise_decay", decay=0.7),
                    selection="fixed")
  # Between this cell's chosen full fine-tune and its start point (the backbone with a RANDOM
  # head, unlike the paper's θ0, the probe model: kind 'lp_ft' as teacher, configs/benchmark/demo.py).
  v.wise_ft = _variant("wise", teacher="full_finetune", search={"alpha": (0.25, 0.5, 0.75, 1.0)})
  # Surgical fine-tuning: one stage (+ the head) trains; which one is chosen on validation.
  v.surgical = _variant("surgical", search={"stage": (1, 7) if not resnet else (1, 4)})
  # A smaller student from scratch, taught by this cell's chosen full fine-tune.
  v.distill = _variant("train", init="scratch", teacher="full_finetune", selection="fixed",
                       overrides=student + scratch_fz + (("loss.distill.alpha", 0.5),
                                                         ("loss.distill.temperature", 4.0)))
  config.variants = v
  # Run and display order (a teacher before its students).
  config.order = ("scratch", "ridge", "knn", "linear_probe_cached", "ncm", "last_stage", "full_finetune",
                  "lp_ft", "l2sp", "llrd", "wise_ft", "surgical", "distill")

  if "quick" in args:
    config.shots = (1,)
    config.seeds = (0,)
    config.shifts = (("gaussian_noise", 3),)
    base.train.num_steps = 4
    base.train.log_every = 4
    v.lp_ft.freezing.strategy_args.switch_step = 2
    v.full_finetune.search = (("optim.lr", (lrs[0],)),)
    v.surgical.search = (("stage", (v.surgical.search[0][1][-1],)),)
    v.wise_ft.search = (("alpha", (0.5, 1.0)),)
  return config
