"""FedAvg (McMahan et al. 2017) against centralised fine-tuning on the same examples, from the real
ImageNet EfficientNet-Lite0 weights to UCI digits.

    python -m jtransfer.benchmark --config=configs/benchmark/fedavg_lite0.py --workdir=workdirs/fedavg

The UCI-digits benchmark's model, data, recipe and protocol (configs/benchmark/digits_lite0.py: 32 px, adamw,
lr 3e-4 with the head at 30x, BatchNorms on running statistics, 12 steps of batch 16), at 5 and
all examples per class, 3 seeds. Every variant sees the same 192 examples: centralised runs 12
steps of 16; FedAvg runs 4 rounds of 3 local steps of 4 examples on each of 4 clients
(``jtransfer/benchmark/kinds/fedavg.py``), IID or label-skewed (Dirichlet α = 0.1). No augmentation
anywhere (FedAvg's clients read eval-preprocessed arrays, so the centralised runs do too). Head
only, last two stages, full. ``bytes_per_round`` in results.jsonl is what the clients send.

Measured 2026-12-03 on the shared 2-core machine (load 1–2): 5 min 15 s. Test top-1 % at 5 / all
per class (mean over 3 seeds): full centralised 67.5 / 50.4, FedAvg IID 50.9 / 41.3, Dir(0.1)
34.4 / 28.5; head only 56.5 / 46.7, IID 36.8 / 33.6, Dir(0.1) 27.3 / 21.5; last two stages
64.2 / 56.2, IID 48.8 / 43.7. Sent per round (4 clients, down + up): 104.5 / 31.7 / 0.39 MiB
(full / last stages / head). Intervals and reading: docs/transfer_forms.md.
"""

from ml_collections import config_dict

from configs.benchmark import digits_lite0 as demo
from jtransfer.benchmark.harness import variant


def get_config(arg=None):
  del arg
  config = demo.get_config()
  config.shots = (5, "all")
  # The same examples, unaugmented, for centralised and federated runs.
  config.dataset_overrides = {
      d: (("data.pp_train", demo.pp(d, 32, demo.LITE_NORM, train=False)),
          ("data.pp_eval", demo.pp(d, 32, demo.LITE_NORM, train=False)))
      for d in demo.IN_MAX}
  fz = lambda strategy, **kw: demo.freezing_for(False, strategy, **kw)
  head = fz("linear_probe", head_lr_mult=demo.HEAD_LR_MULT)
  last, full = fz("last_stages", k=2), fz("full_ft")
  iid = {"num_clients": 4, "local_steps": 3, "alpha": 0.0}
  skew = {**iid, "alpha": 0.1}
  v = config_dict.ConfigDict()
  v.central_head = variant("train", freezing=head, selection="fixed")
  v.fedavg_head_iid = variant("fedavg", freezing=head, args=iid, selection="fixed")
  v.fedavg_head_dir01 = variant("fedavg", freezing=head, args=skew, selection="fixed")
  v.central_last = variant("train", freezing=last, selection="fixed")
  v.fedavg_last_iid = variant("fedavg", freezing=last, args=iid, selection="fixed")
  v.central_full = variant("train", freezing=full, selection="fixed")
  v.fedavg_full_iid = variant("fedavg", freezing=full, args=iid, selection="fixed")
  v.fedavg_full_dir01 = variant("fedavg", freezing=full, args=skew, selection="fixed")
  config.variants = v
  config.order = ("central_head", "fedavg_head_iid", "fedavg_head_dir01", "central_last",
                  "fedavg_last_iid", "central_full", "fedavg_full_iid", "fedavg_full_dir01")
  config.protocol.comparisons = tuple(
      (f"{v} vs centralised full fine-tuning", v, "central_full", "test")
      for v in config.order if v != "central_full")
  return config
