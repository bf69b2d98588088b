"""The demo (`make demo`): ImageNet EfficientNet-Lite0 → Fashion-MNIST at 96 px, with no-transfer
baselines, LP-FT and WiSE-FT as their papers define them, and declared paired comparisons.

    python -m jtransfer.benchmark --config=configs/benchmark/demo.py --workdir=workdirs/demo
    python -m jtransfer.benchmark --config=configs/benchmark/demo.py:full --workdir=workdirs/demo_full
    python -m jtransfer.benchmark --config=configs/benchmark/demo.py:quick --workdir=/tmp/q   # smoke

Target: Fashion-MNIST (Debian's `dataset-fashion-mnist`, read offline; `make demo` installs it),
28×28 grey images resized to 96 px: at 32 px Lite0's ImageNet features lose to raw pixels, at 96
px they win (BiT-HyperRule upsamples images under 96² px for the same reason; it would go to
128 px crops of 160, which this 2-core CPU cannot afford). The protocol uses a declared subsample
(`protocol.train_limit`: the train split's first 3,000 images, pool 2,400 / validation 600;
`protocol.test_limit`: the test split's first 1,000), every grid point is chosen on validation
(20 per class for k-shot cells) and only the choice is evaluated on test and its shifted copy.

Default (≤ 15 min from a fresh clone on the 2-core machine, measured in README):
- feature classifiers on Lite0's pre-logits (ridge, kNN, logistic regression) and the same three
  on the raw 28 × 28 pixels (`pixels_*`, the no-transfer baselines; the shifted test sets are
  corrupted at 28 px for both), at 1, 5, 20 and all examples per class × 10 draws;
- at 5 per class × 5 draws, the trained rows: from scratch (a ResNet-18 with 8 base planes, the
  same budget), full fine-tuning, LP-FT (the head starts as the converged logistic probe) and
  WiSE-FT between LP-FT's start (the probe model) and its fine-tune (α ∈ {0, 0.5, 1} chosen on
  validation; the whole curve reported); full FT and LP-FT share one declared learning rate
  (1e-4) and one step budget: `budget.rule('epochs')` with 10 epochs of the draw (32 steps of 16
  at 5/class), a declared floor, not a per-method choice.
':full' adds the trained rows at 1 and 20 per class, L2-SP, layer-wise decay, surgical
fine-tuning, two more shifts and the five-point α curve (about an hour here). ':quick' is one
draw, 1 per class, 2-step budgets: a smoke run for tests.

Writes results.{jsonl,csv,md,png}, summary.csv, trials.jsonl, comparisons.md, cost.png and
ood.png in WORKDIR. The questions are declared below (`protocol.comparisons`), before the run,
and tested paired over draws with Holm's correction; README reads the outcome.
"""

from ml_collections import config_dict

from jtransfer import optim
from jtransfer.benchmark import budget
from jtransfer.benchmark.harness import variant as _variant
from jtransfer.train import config as train_config

ARGS = ("quick", "full")
DATASET = "fashion_mnist"
# EfficientNet-Lite's input normalisation: (pixels - 127.5) / 128 (models.get_spec(...).normalize).
LITE_NORM = {"mean": 0.5, "std": 128 / 255}
SIZE = 96
BATCH = 16
CLASSES = 10
POOL = 2400  # train_limit 3,000 × (1 - val_fraction 0.2)
# The head of a fine-tune starts at random: it learns at 30× the backbone's rate (measured on the
# UCI-digits demo's validation, 5/class: 41.5 % vs 18 % at 1×). LP-FT's head starts trained, so
# it takes the backbone's rate, as in Kumar et al.
HEAD_LR_MULT = 30.0


def _parse(arg):
  tokens = tuple(t for t in (arg or "").split(",") if t)
  bad = sorted(set(tokens) - set(ARGS))
  if bad:
    raise ValueError(f"demo config arg {bad}: known {ARGS}")
  return set(tokens)


NORMALIZE = {"op": "normalize", "in_max": 255.0, **LITE_NORM}
# The no-transfer baselines read the images as they are: 28 × 28 × 1 = 784 values (upsampling
# adds no information, and 96 × 96 × 3 = 27,648 dimensions made every pixel cell ~10x slower).
PIXELS_PP = [{"op": "decode", "channels": 1}, NORMALIZE, {"op": "resize", "size": 28}]


def pp(size: int, *, train: bool) -> list:
  """Train: resize, crop with padding, flip, normalise. Eval: normalise, then resize — the same
  numbers (a bilinear resize commutes with the affine normalisation), but a shifted test set's
  corruption, inserted before the normalisation (``corruptions.shifted_pp``), then hits the
  28 px image, exactly as it hits the pixel baselines' (``PIXELS_PP``)."""
  if train:
    return ["decode", {"op": "resize", "size": size}, "grayscale_to_rgb",
            {"op": "random_crop", "size": size, "padding": size // 8}, "flip_lr", NORMALIZE]
  return ["decode", NORMALIZE, {"op": "resize", "size": size}, "grayscale_to_rgb"]


def steps_for(shots, *, quick: bool) -> int:
  """The declared budget: 10 epochs of the training draw at batch 16, at least 20 steps and at
  most 300 (``budget.rule('epochs')``); 2 in the smoke run. (15 epochs, 47 steps at 5/class,
  took the default demo to ~19 minutes here; at 15 epochs full FT and LP-FT had settled in 4 of
  5 cells by the convergence check, and the report flags any that has not at 10.)"""
  if quick:
    return 2
  n = POOL if shots == "all" else int(shots) * CLASSES
  return budget.rule("epochs", n_train=n, batch_size=BATCH, image_size=SIZE, epochs=10,
                     min_steps=20, max_steps=300).steps


def freezing(strategy: str, **args):
  """BatchNorms on their running (ImageNet) statistics: a few dozen steps of batch 16 would
  otherwise train with batch statistics and evaluate with barely moved running ones."""
  fz = optim.get_freezing_config(strategy, **args)
  fz.bn_mode = "running"
  return fz


def _base(quick: bool):
  base = train_config.get_base_config()
  base.model.arch = "efficientnet_lite0"
  base.model.init = "pkg:efficientnet_lite0"  # ImageNet weights from the installed package
  base.data.dataset = DATASET
  base.data.image_size = SIZE
  base.data.pp_train = pp(SIZE, train=True)
  base.data.pp_eval = pp(SIZE, train=False)
  base.data.batch_size = BATCH
  base.data.eval_batch_size = 250
  base.data.repeat_small = True  # 1 shot × 10 classes < batch 16: repeat, logged
  base.optim.name = "adamw"
  base.optim.lr = 3e-4
  base.optim.weight_decay = 1e-4
  base.optim.schedule = "warmup_cosine"
  base.optim.warmup_steps = 2
  steps = steps_for(5, quick=quick)
  base.train.num_steps = steps
  base.train.ckpt_every = 0
  base.train.export = "last"
  # Evaluated (on the VALIDATION split) at 75 % and at the end, logged ~8 times: what the
  # convergence check needs.
  base.train.log_every, base.train.eval_every = budget.logging_plan(steps)
  base.train.tensorboard = False
  base.train.progress = False
  base.freezing = freezing("full_ft", head_lr_mult=HEAD_LR_MULT)
  return base


def get_config(arg=None):
  args = _parse(arg)
  quick, full = "quick" in args, "full" in args
  config = config_dict.ConfigDict()
  config.pretrain = config_dict.ConfigDict({"enabled": False})
  config.base = _base(quick)
  config.datasets = (DATASET,)
  config.dataset_overrides = {}
  config.shots = (1, 5, 20, "all")
  config.seeds = tuple(range(10))
  trained_shots = (1, 5, 20) if full else (5,)
  trained_seeds = tuple(range(5))
  # Per shot level: the step budget and the logging plan its convergence check needs.
  config.shot_overrides = {}
  for s in trained_shots:
    n = steps_for(s, quick=quick)
    log_every, eval_every = budget.logging_plan(n)
    config.shot_overrides[str(s)] = (("train.num_steps", n), ("train.log_every", log_every),
                                     ("train.eval_every", eval_every))

  config.protocol = config_dict.ConfigDict()
  config.protocol.val_fraction = 0.2
  config.protocol.val_per_class = 20
  config.protocol.train_limit = 3000
  config.protocol.test_limit = 1000
  config.protocol.level = 0.95
  # The questions, declared before the run: (name, a, b, metric), a - b paired over draws in
  # every (dataset, shots) cell both have; Holm over the whole family.
  config.protocol.comparisons = (
      ("ImageNet features vs raw pixels, ridge", "ridge", "pixels_ridge", "test"),
      ("ImageNet features vs raw pixels, logistic", "logreg", "pixels_logreg", "test"),
      ("fine-tuning vs linear probe", "full_finetune", "logreg", "test"),
      ("fine-tuning vs from scratch", "full_finetune", "scratch", "test"),
      ("LP-FT vs FT, in distribution", "lp_ft", "full_finetune", "test"),
      ("LP-FT vs FT, out of distribution", "lp_ft", "full_finetune", "ood"),
      ("WiSE-FT vs its fine-tune, out of distribution", "wise_ft", "lp_ft", "ood"),
      ("WiSE-FT vs its fine-tune, in distribution", "wise_ft", "lp_ft", "test"),
  )
  # Shifted test sets (jtransfer.data.corruptions), evaluated only: (name, severity).
  config.shifts = (("gaussian_noise", 3),) + ((("contrast", 3), ("rotate", 2)) if full else ())
  config.shift_seed = 0

  # One declared learning rate for both fine-tunes by default (the 2-point grid below costs twice
  # the demo's 15 minutes; 1e-4 is the point full FT's grid chose in 2 of 2 draws, LP-FT's in 1
  # of 2, on validation, in a run of that grid). ':full' searches the grid for both.
  lrs = (1e-4, 1e-3) if full else (1e-4,)
  trained = {"shots": trained_shots, "seeds": trained_seeds}
  v = config_dict.ConfigDict()
  raw = {"overrides": (("data.pp_eval", PIXELS_PP),)}
  v.pixels_ridge = _variant("pixels_ridge", search={"l2_reg": (0.1, 10.0, 1000.0)}, **raw)
  v.pixels_knn = _variant("pixels_knn", search={"k": (1, 10)}, **raw)
  v.pixels_logreg = _variant("pixels_logreg", search={"C": (0.01, 1.0)}, **raw)
  v.ridge = _variant("ridge", search={"l2_reg": (0.1, 10.0, 1000.0)})
  v.knn = _variant("knn", search={"k": (1, 10)})
  v.logreg = _variant("logreg", search={"C": (0.01, 1.0)})
  # From scratch: a ResNet-18 with 8 base planes, every BatchNorm training its statistics, the
  # same budget and a grid of the same size.
  v.scratch = _variant("train", init="scratch", search={"optim.lr": (1e-3, 1e-2) if full else (1e-2,)},
                      overrides=(
      ("model.arch", "resnet18"), ("model.base_planes", 8),
      ("freezing", optim.get_freezing_config("full_ft"))), **trained)
  v.full_finetune = _variant("train", search={"optim.lr": lrs}, **trained)
  v.lp_ft = _variant("lp_ft", teacher="logreg", freezing=freezing("full_ft"),
                     search={"optim.lr": lrs}, **trained)
  alphas = (0.0, 0.25, 0.5, 0.75, 1.0) if full else (0.0, 0.5, 1.0)
  v.wise_ft = _variant("wise", teacher="lp_ft", search={"alpha": alphas}, **trained)
  order = ["pixels_ridge", "pixels_knn", "pixels_logreg", "ridge", "knn", "logreg", "scratch",
           "full_finetune", "lp_ft", "wise_ft"]
  if full:
    v.l2sp = _variant("train", freezing=freezing("l2sp", alpha=0.01, beta_head=0.01,
                                                 head_lr_mult=HEAD_LR_MULT),
                      overrides=(("optim.weight_decay", 0.0),), search={"optim.lr": lrs},
                      **trained)
    v.llrd = _variant("train", freezing=freezing("layerwise_decay", decay=0.7,
                                                 head_lr_mult=HEAD_LR_MULT),
                      search={"optim.lr": lrs}, **trained)
    # Surgical fine-tuning (Lee et al. 2023): one stage + the head, every stage a candidate,
    # trained and chosen on the shifted distribution, one variant per shift (the stage per shift).
    for name, severity in config.shifts:
      v[f"surgical_{name}"] = _variant("surgical_shift", args={"shift": f"{name}-{severity}"},
                                       search={"stage": tuple(range(7))}, **trained)
      order.append(f"surgical_{name}")
    order += ["l2sp", "llrd"]
  config.variants = v
  config.order = tuple(order)

  if quick:
    config.shots = (1,)
    config.seeds = (0,)
    for name in order:
      if v[name].get("shots") is not None:
        v[name].shots, v[name].seeds = (1,), (0,)
      config.shot_overrides = {}
  return config
