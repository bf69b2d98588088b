"""Which XLA_FLAGS suit a model's train step on this CPU: compile time and step time per flag set.

    .venv/bin/python scripts/bench_xla_flags.py --arch=efficientnet_lite0 --size=32 --batch=16
    .venv/bin/python scripts/bench_xla_flags.py --arch=resnet18 --size=224 --batch=32 --rounds=2
    .venv/bin/python scripts/bench_xla_flags.py --flag_sets=jaxlib,dr --conv_impls=xla,auto
    .venv/bin/python scripts/bench_xla_flags.py --flag_sets=dr,dr+O1,dr+O0 --depthwise_impls=auto,xla

Each flag set runs in its own process (XLA reads its flags once), round-robin over ``--rounds``,
so load from other jobs hits every flag set alike; a process builds the model, lowers and compiles
an adamw full fine-tune step (``train.step.make_train_step`` over ``losses.make_loss_fn``, state
donated, no persistent compilation cache), runs it once, then times ``--steps`` calls. Printed:
compile seconds and the median step per flag set over all rounds, the ratio to the first flag
set, ``compile + --trial_steps steps`` (what a short benchmark trial pays for its train step: the
demo trains 12 steps) and ``os.getloadavg()`` before and after. A flag set may join several names
with '+' (``dr+O1``: the fusion list and LLVM's -O1). ``make demo`` takes its flags from this
measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FLAG_SETS = {
    "jaxlib": "",  # jaxlib's defaults
    "der": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",  # `make test`'s
    "dr": "--xla_cpu_experimental_ynn_fusion_type=dot,reduce",
    # XLA:CPU's LLVM optimisation level (jaxlib's default is 2); joined with '+', e.g. dr+O1.
    "O0": "--xla_backend_optimization_level=0",
    "O1": "--xla_backend_optimization_level=1",
}


def flags_of(name: str) -> str:
  """XLA_FLAGS of a flag-set name, '+' joining several (``dr+O1``)."""
  unknown = [n for n in name.split("+") if n not in FLAG_SETS]
  if unknown:
    raise SystemExit(f"unknown flag set {unknown[0]!r}; known: {', '.join(FLAG_SETS)}")
  return " ".join(f for f in (FLAG_SETS[n] for n in name.split("+")) if f)


def worker(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from jtransfer import models  # pylint: disable=g-import-not-at-top
  from jtransfer.train import config as train_config  # pylint: disable=g-import-not-at-top
  from jtransfer.train import losses  # pylint: disable=g-import-not-at-top
  from jtransfer.train.state import TrainState  # pylint: disable=g-import-not-at-top
  from jtransfer.train.step import make_train_step  # pylint: disable=g-import-not-at-top

  options = {} if args.depthwise_impl == "-" else {"depthwise_impl": args.depthwise_impl}
  model = models.create(args.arch, num_classes=10, conv_impl=args.conv_impl, **options)
  x = jnp.zeros((args.batch, args.size, args.size, 3), jnp.float32)
  batch = {"image": x, "label": jnp.arange(args.batch, dtype=jnp.int32) % 10}
  variables = model.init(jax.random.key(0), x[:1], train=False)
  tx = optax.adamw(1e-3)
  mask = jax.tree.map(lambda _: True, variables["params"])
  loss_cfg = train_config.get_base_config().loss  # plain cross-entropy
  step = jax.jit(make_train_step(losses.make_loss_fn(model, loss_cfg), tx, mask),
                 donate_argnums=0)
  state = TrainState.create(params=variables["params"], batch_stats=variables["batch_stats"],
                            tx=tx)
  rng = jax.random.key(0)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  state, _ = compiled(state, batch, rng)
  jax.block_until_ready(state)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, _ = compiled(state, batch, rng)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
  return {"compile_s": compile_s, "steps_s": times}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arch", default="efficientnet_lite0")
  p.add_argument("--size", type=int, default=32)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--flag_sets", default="jaxlib,der,dr")
  p.add_argument("--conv_impls", default="xla", help="model.conv_impl values, each x flag set")
  p.add_argument("--depthwise_impls", default="-",
                 help="EfficientNet-Lite's depthwise_impl values, each x the above ('-': default)")
  p.add_argument("--trial_steps", type=int, default=12, help="steps of the 'trial' column")
  p.add_argument("--conv_impl", default="xla", help=argparse.SUPPRESS)
  p.add_argument("--depthwise_impl", default="-", help=argparse.SUPPRESS)
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    print("RESULT" + json.dumps(worker(args)))
    return
  names = [(fs, impl, dw) for dw in args.depthwise_impls.split(",")
           for impl in args.conv_impls.split(",") for fs in args.flag_sets.split(",")]
  for fs in args.flag_sets.split(","):
    flags_of(fs)  # an unknown name stops here, before any worker runs
  load_before = os.getloadavg()
  out = {n: {"compile_s": [], "steps_s": []} for n in names}
  for _ in range(args.rounds):
    for name in names:
      fs, impl, dw = name
      env = {**os.environ, "XLA_FLAGS": flags_of(fs), "TF_CPP_MIN_LOG_LEVEL": "2"}
      cmd = [sys.executable, __file__, "--worker", f"--arch={args.arch}", f"--size={args.size}",
             f"--batch={args.batch}", f"--steps={args.steps}", f"--conv_impl={impl}",
             f"--depthwise_impl={dw}"]
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
      r = json.loads(proc.stdout.split("RESULT", 1)[1])
      out[name]["compile_s"].append(r["compile_s"])
      out[name]["steps_s"].extend(r["steps_s"])
  load_after = os.getloadavg()
  print(f"\n{args.arch}, {args.size} px, batch {args.batch}, adamw full fine-tune step; "
        f"{args.rounds} rounds x {args.steps} steps; load {load_before[0]:.1f} -> {load_after[0]:.1f}\n")
  n = args.trial_steps
  print("| flags | conv_impl | depthwise_impl | XLA_FLAGS | compile s (median) | step ms (median) "
        f"| step vs first | compile + {n} steps, s | vs first |")
  print("|---|---|---|---|---:|---:|---:|---:|---:|")
  first = statistics.median(out[names[0]]["steps_s"])
  first_trial = statistics.median(out[names[0]]["compile_s"]) + n * first
  for name in names:
    fs, impl, dw = name
    step = statistics.median(out[name]["steps_s"])
    compile_s = statistics.median(out[name]["compile_s"])
    trial = compile_s + n * step
    print(f"| {fs} | {impl} | {'(default)' if dw == '-' else dw} | "
          f"`{flags_of(fs) or '(unset)'}` | {compile_s:.1f} | {step * 1e3:.0f} | "
          f"{first / step:.2f}x | {trial:.1f} | {first_trial / trial:.2f}x |")


if __name__ == "__main__":
  main()
