"""What one benchmark trial costs once its programs exist: shared programs vs the persistent cache.

    .venv/bin/python scripts/bench_trial_overhead.py                      # Lite0 full FT, ~4 min
    .venv/bin/python scripts/bench_trial_overhead.py --variant=last_stage --rounds=3

Runs the demo config's (``configs/benchmark/digits_lite0.py:quick``) trial of ``--variant`` on UCI digits
through ``trainer.train_and_evaluate`` in one process, with JAX's persistent compilation cache on
(as the benchmark CLI has it). One warm-up trial compiles everything; then, round-robin, a trial
whose programs were dropped first (``programs.clear()``: it traces, lowers and loads its
executables from the persistent cache, as every run did before ``train.programs``) and a trial
that reuses them. Each trial is a new seed and run dir. Printed: the median wall seconds of each
and their ratio, with ``os.getloadavg()`` before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax

from jtransfer import configs_path
from jtransfer.benchmark import harness
from jtransfer.train import programs, trainer

# The repository's configs/ package, importable however the script is started.
DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                    "benchmark", "digits_lite0.py")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variant", default="full_finetune")
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args()
  configs_path.add_package_root(DEMO)
  from configs.benchmark import digits_lite0 as demo  # pylint: disable=g-import-not-at-top  (after the path)
  tmp = tempfile.mkdtemp(prefix="trial_overhead_")
  jax.config.update("jax_compilation_cache_dir", os.path.join(tmp, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  config = demo.get_config("quick")
  splits = harness.splits_for(config, "uci_digits", 1)
  point = harness.points(config.variants[args.variant])[0]

  def trial(seed: int) -> float:
    cell = harness.Cell("uci_digits", args.variant, 1, seed)
    cfg = harness.cell_config(config, cell, pretrained=config.base.model.init, point=point,
                              splits=splits)
    t0 = time.perf_counter()
    trainer.train_and_evaluate(cfg, os.path.join(tmp, f"run-{seed}"))
    return time.perf_counter() - t0

  load_before = os.getloadavg()
  warm = trial(0)
  fresh, shared = [], []
  for r in range(args.rounds):
    programs.clear()
    fresh.append(trial(1 + 2 * r))
    shared.append(trial(2 + 2 * r))
  load_after = os.getloadavg()
  f, s = statistics.median(fresh), statistics.median(shared)
  print(f"\n{args.variant} trial (demo quick config, EfficientNet-Lite0 32 px, 4 steps), "
        f"{args.rounds} rounds; load {load_before[0]:.1f} -> {load_after[0]:.1f}; "
        f"first trial (compiles) {warm:.1f} s\n")
  print("| programs | median wall s | trials |")
  print("|---|---:|---|")
  print(f"| rebuilt per run (persistent cache only) | {f:.1f} | {', '.join(f'{t:.1f}' for t in fresh)} |")
  print(f"| shared (`train.programs`) | {s:.1f} | {', '.join(f'{t:.1f}' for t in shared)} |")
  print(f"\nshared / rebuilt: {f / s:.2f}x faster")


if __name__ == "__main__":
  main()
