"""Zero-shot to unseen digits on real ImageNet EfficientNet-Lite0 features (ESZSL, Romera-Paredes &
Torr 2015), beside a supervised ridge probe on the same features.

    python -m jtransfer.benchmark --config=configs/benchmark/zeroshot_lite0.py --workdir=workdirs/zeroshot

The demo's model, data and preprocessing (Lite0 `pkg:efficientnet_lite0`, UCI digits at 32 px,
pool = first 80 % of train). `zeroshot`: per seed the ten digits are cut into 3 disjoint unseen
sets (`zeroshot.class_splits`), ESZSL is fitted on the pool's seen-class features with the
hand-made digit attributes (`jtransfer/methods/zeroshot/digit_attributes.csv`, each attribute defined
there), (γ, λ) chosen on seen-class folds, and scored once on the test split (ZSL and generalised
ZSL, chance beside each): `zeroshot.md`. The ridge cells (all classes seen, 3 seeds) are the
supervised reference and fill the feature cache the section reads.

Measured 2026-12-03 on the shared 2-core machine (load 1–2): 27 s. ZSL unseen-class accuracy
30.3 ± 13.6 % (min 11, max 60) over 9 splits against chance 30.6 ± 4.2 %: at chance; generalised
ZSL seen 70.4 %, unseen 4.6 %, H 8.1 %. Ridge on the same features, all classes seen: 82.7 %.
Reading: docs/transfer_forms.md.
"""

from configs.benchmark import digits_lite0 as demo


def get_config(arg=None):
  del arg
  config = demo.get_config()
  config.shots = ("all",)
  config.shifts = ()
  config.variants = {"ridge": config.variants.ridge}
  config.order = ("ridge",)
  config.protocol.comparisons = ()
  config.zeroshot = {"attributes": "", "splits": 3, "seeds": (0, 1, 2)}
  return config
