"""Meta-learned start (Reptile, Nichol et al. 2018) against the plain ImageNet start and a
supervised intermediate start, from the real EfficientNet-Lite0 weights to UCI digits.

    python -m jtransfer.benchmark --config=configs/benchmark/reptile_lite0.py --workdir=workdirs/reptile

Two starts are made once from the ImageNet weights on MNIST-5k train (the source; the target's
splits are never read, ``jtransfer/benchmark/starts.py``), with the demo's model, freezing and
optimizer (32 px, adamw 3e-4 with the head at 30x, BatchNorms on running statistics):

- ``reptile``: META_STEPS meta steps × 4 episodes of 5-way 5-shot MNIST (labels re-drawn per
  episode, zero head), 5 inner steps of the train step each (constant lr, fresh Adam per
  episode), ε = 1 annealed to 0.
- ``source_ft``: supervised fine-tuning on MNIST-5k's ten labels, on as many examples as Reptile's
  inner loops saw (SOURCE_STEPS steps of batch 16) — the control: does meta-learning beat plain
  intermediate training on the same source?

Then the demo's protocol on UCI digits at 1 and 5 examples per class, 3 seeds: full fine-tuning
(lr chosen on validation from the demo's grid) and nearest class mean on frozen features, from
each of the three starts, and the demo's from-scratch run. MNIST and UCI digits share their ten
classes (different images, writers and resolution), so both starts have seen digits: the question
is which use of the source moves best, not whether the source helps.

Measured 2026-12-03 on the shared 2-core machine (load 1–2): 10 min 42 s (the starts 128 s and
142 s). Test top-1 % at 1 / 5 per class, mean over 3 seeds — fine-tune from ImageNet 53.3 / 55.0,
from Reptile 50.1 / 64.5, from supervised MNIST 70.4 / 79.3; NCM on their features 42.8 / 63.0,
52.8 / 67.6, 61.4 / 77.7; scratch 9.5 / 10.7. Reptile beats the ImageNet start at 5/class
(+9.6 [+4.0, +14.7]) and loses to the supervised start everywhere (−15 to −20 fine-tuned).
Intervals, OOD and reading: docs/transfer_forms.md.
"""

from ml_collections import config_dict

from configs.benchmark import digits_lite0 as demo
from jtransfer.benchmark import starts
from jtransfer.benchmark.harness import variant

META_STEPS = 40
REPTILE = {"ways": 5, "shots": 5, "meta_batch": 4, "inner_steps": 5, "meta_steps": META_STEPS}
# Reptile's inner loops see meta_steps × meta_batch × inner_steps × ways × shots examples.
SOURCE_STEPS = META_STEPS * 4 * 5 * 25 // 16


def get_config(arg=None):
  quick = arg == "quick"
  if arg not in (None, "", "quick"):
    raise ValueError(f"reptile_lite0 config arg {arg!r}: known '' or 'quick'")
  config = demo.get_config("quick" if quick else None)
  config.shots = (1,) if quick else (1, 5)
  constant = (("optim.schedule", "constant"), ("optim.warmup_steps", 0))
  reptile = dict(REPTILE, meta_steps=2) if quick else REPTILE
  config.starts = config_dict.ConfigDict({
      "reptile": starts.start("reptile", dataset="mnist5k", overrides=constant, args=reptile),
      "source_ft": starts.start("train", dataset="mnist5k", overrides=(
          ("train.num_steps", 4 if quick else SOURCE_STEPS),
          ("train.log_every", 4 if quick else SOURCE_STEPS // 4),
          ("optim.warmup_steps", 2 if quick else SOURCE_STEPS // 20))),
  })
  demo_v = config.variants
  lrs = demo_v.full_finetune.search
  ft = lambda init: variant("train", init=init, freezing=demo_v.full_finetune.freezing,
                            search=dict(lrs))
  ncm = lambda init: variant("ncm", init=init, search={"cosine": (True, False)})
  v = config_dict.ConfigDict()
  v.scratch = demo_v.scratch
  v.ncm = ncm("pretrained")
  v.ncm_source = ncm("source_ft")
  v.ncm_reptile = ncm("reptile")
  v.full_finetune = ft("pretrained")
  v.source_finetune = ft("source_ft")
  v.reptile_finetune = ft("reptile")
  config.variants = v
  config.order = ("scratch", "ncm", "ncm_source", "ncm_reptile", "full_finetune",
                  "source_finetune", "reptile_finetune")
  config.protocol.comparisons = (
      ("Reptile start vs ImageNet start, fine-tuned", "reptile_finetune", "full_finetune", "test"),
      ("Reptile start vs supervised source start, fine-tuned", "reptile_finetune",
       "source_finetune", "test"),
      ("Reptile start vs ImageNet start, prototypes", "ncm_reptile", "ncm", "test"),
  )
  return config
