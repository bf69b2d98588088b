"""Times full fine-tune / last-stage fine-tune / linear probe / linear probe on cached features,
side by side in one run, with the train step the trainer uses (adamw + weight decay, clipping,
gradient/param/update norms, one jit). A control row runs the linear probe the naive way: the
gradient of the whole tree, zeroed by ``optax.set_to_zero`` afterwards.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce \
        .venv/bin/python scripts/bench_freezing.py            # both settings, ~4 min on 2 cores

Settings: ResNet-18 at 224 px, batch 32; small-stem ResNet-18 at 32 px, batch 128. Each step is
compiled (excluded) and run ``--warmup`` times; then the variants are timed round-robin, one step
each per repetition for ``--steps`` repetitions, so load from other jobs on a shared machine hits
them alike. Reported: the median, with GFLOP/img from ``compile().cost_analysis()``. Weights are
random (speed does not depend on them). "cached features" times the head's step on stored 512-d pre-logits; the cache
costs one inference forward per image, reported on its own row.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtransfer import models, optim
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

SETTINGS = {"224": dict(img=224, batch=32, small_stem=False),
            "32": dict(img=32, batch=128, small_stem=True)}
NUM_CLASSES = 10


def flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


def random_variables(model, img):
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, img, img, 3)))
  rng = np.random.default_rng(0)
  def draw(path, s):
    x = rng.normal(size=s.shape).astype(np.float32)
    if path.endswith("kernel"):
      return x * np.sqrt(2.0 / np.prod(s.shape[:-1]), dtype=np.float32)
    return 1.0 + 0.1 * np.abs(x) if path.endswith(("scale", "var")) else 0.1 * x
  # On the device once, as torch's parameters are: numpy leaves would be copied in every call.
  return jax.device_put(optim.rules.map_paths(draw, shapes))


def optim_config():
  cfg = optim.get_config()
  cfg.update(dict(name="adamw", lr=1e-3, schedule="warmup_cosine", warmup_steps=10,
                  weight_decay=0.05, clip_norm=1.0))
  return cfg


def image_loss(model):
  def loss_fn(params, batch_stats, batch, rng):
    (logits, _), mut = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"],
                                   train=True, mutable=["batch_stats"], rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, (mut["batch_stats"], {})
  return loss_fn


def head_loss(params, batch_stats, batch, rng):
  del rng
  logits = batch["features"] @ params["fc"]["kernel"] + params["fc"]["bias"]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  return loss, (batch_stats, {})


def naive_step(loss_fn, tx):
  """The control: grad of the FULL tree, set_to_zero in tx, global norm of all gradients logged."""
  def step(state, batch, rng):
    (loss, (stats, _)), g = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, batch, rng)
    updates, opt_state = tx.update(g, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(g)}
    return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                         opt_state=opt_state), metrics
  return step


class Timed:
  """One compiled function and its arguments; ``threaded``: its first output is its next input."""

  def __init__(self, label, compiled, args, batch, *, threaded):
    self.label, self.compiled, self.args, self.batch = label, compiled, args, batch
    self.threaded, self.times = threaded, []
    self.flops = flops(compiled) / batch

  def call(self):
    t = time.perf_counter()
    out = self.compiled(*self.args)
    jax.block_until_ready(out)
    if self.threaded:
      self.args = (out[0],) + tuple(self.args[1:])
    return time.perf_counter() - t


def time_interleaved(variants, *, warmup, steps):
  """Round-robin: every repetition runs one step of each variant, so a busy neighbour slows all
  of them alike; returns each variant's median seconds per step."""
  for v in variants:
    for _ in range(warmup):
      v.call()
  for _ in range(steps):
    for v in variants:
      v.times.append(v.call())
  return [statistics.median(v.times) for v in variants]


def bench_setting(name, *, img, batch, small_stem, warmup, steps):
  base = models.create("resnet18", num_classes=NUM_CLASSES, small_stem=small_stem)
  variables = random_variables(base, img)
  params, stats = variables["params"], variables["batch_stats"]
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, img, img, 3)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, size=(batch,)).astype(np.int32)
  data = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  cfg = optim_config()
  variants = []

  def add(label, loss_fn, model_params, model_stats, rules, batch_, naive=False):
    tx = optim.build_optimizer(cfg, rules, model_params, total_steps=1000)
    state = TrainState.create(params=jax.tree.map(jnp.copy, model_params),
                              batch_stats=jax.tree.map(jnp.copy, model_stats), tx=tx)
    if naive:
      step = naive_step(loss_fn, tx)
    else:
      mask = optim.trainable_mask(optim.label_params(model_params, rules))
      step = make_train_step(loss_fn, tx, mask)
    key = jax.random.key(0)
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch_, key).compile()
    variants.append(Timed(label, compiled, (state, batch_, key), batch, threaded=True))

  for label, strategy in [("full fine-tune", "full_ft"), ("last-stage fine-tune", "last_stages"),
                          ("linear probe", "linear_probe")]:
    rules = optim.phases(optim.get_freezing_config(strategy))[0].param_rules
    labels_ = optim.label_params(params, rules)
    model = models.create("resnet18", num_classes=NUM_CLASSES, small_stem=small_stem,
                          frozen_bn=optim.frozen_bn_patterns(labels_, "frozen"))
    add(label, image_loss(model), params, stats, rules, data)

  # Linear probe on cached features: the head's step on stored pre-logits; the cache itself costs
  # one inference forward per image, timed on its own row.
  extract = jax.jit(lambda v, x: base.apply(v, x, train=False)[1]["pre_logits"])
  compiled = extract.lower(variables, data["image"]).compile()
  features = compiled(variables, data["image"])
  add("linear probe, cached features", head_loss, {"fc": params["fc"]}, {}, [(r"^fc/", 1.0)],
      {"features": features, "label": data["label"]})
  variants.append(Timed("(feature cache: inference forward, once)", compiled,
                        (variables, data["image"]), batch, threaded=False))

  probe_rules = optim.phases(optim.get_freezing_config("linear_probe"))[0].param_rules
  model = models.create("resnet18", num_classes=NUM_CLASSES, small_stem=small_stem,
                        frozen_bn=optim.frozen_bn_patterns(optim.label_params(params, probe_rules)))
  add("control: linear probe, naive full grad", image_loss(model), params, stats, probe_rules,
      data, naive=True)

  medians = time_interleaved(variants, warmup=warmup, steps=steps)
  print(f"resnet18 {img}px batch {batch}{' small-stem' if small_stem else ''}:", flush=True)
  for v, sec in zip(variants, medians):
    print(f"  {v.label:<42} {v.flops / 1e9:8.3g} GFLOP/img {sec * 1e3:9.1f} ms/step "
          f"{batch / sec:10.1f} img/s  (min {min(v.times) * 1e3:.1f} ms)", flush=True)
  return [(v.label, v.flops, sec) for v, sec in zip(variants, medians)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--settings", default="224,32", help="comma-separated keys of SETTINGS")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", type=int, default=7)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {jax.device_count()} device(s); "
        f"median of {args.steps} steps after {args.warmup} warm-up steps", flush=True)
  tables = {}
  for key in args.settings.split(","):
    s = SETTINGS[key]
    tables[key] = bench_setting(key, warmup=args.warmup, steps=args.steps, **s)
  print("\n| setting | variant | GFLOP/img | ms/step | img/s | speed vs full FT |")
  print("|---|---|---:|---:|---:|---:|")
  for key, rows in tables.items():
    s = SETTINGS[key]
    full = rows[0][2]
    setting = f"{s['img']} px, batch {s['batch']}" + (" (small stem)" if s["small_stem"] else "")
    for label, fl, sec in rows:
      print(f"| {setting} | {label.strip()} | {fl / 1e9:.3g} | {sec * 1e3:.1f} | "
            f"{s['batch'] / sec:.1f} | {full / sec:.2f}× |")


if __name__ == "__main__":
  main()
