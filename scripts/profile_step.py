"""Where one of ``bench_vs_torch.py``'s steps spends its time, jtransfer's and (``--torch``)
PyTorch's, from a profiler trace of a few steps.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,reduce \\
      .venv/bin/python scripts/profile_step.py --setting=224 --task=train --impl=auto --torch

jtransfer: the step is built by ``bench_vs_torch.jax_step`` (as that benchmark and the trainer
build it), warmed up, and ``--steps`` steps are traced with ``jax.profiler``; the XLA:CPU thunk
events are summed per kind. The oneDNN extension's calls are split by direction (forward, input
gradient, weight gradient: each ``ffi_call``'s target in the compiled HLO). Thunks run
concurrently on XLA's intra-op pool, so sums can exceed the wall time; what bounds the step is
printed beside them: the union of the oneDNN calls' intervals (their sum minus the time one call
waited for another under the extension's one-at-a-time lock), the time some other thunk ran while
no oneDNN call did (the rest of the step's critical path), and the time no thunk ran at all.

torch (``--torch``, then, in a process of its own): ``bench_vs_torch.torch_step_worker``'s step
under ``torch.profiler``, self CPU time per operator (``aten::mkldnn_convolution`` is the forward, ``aten::convolution_backward``
both gradients). Both sides run with jtransfer's malloc settings (``jtransfer.cpu.hostmem``), as
``bench_vs_torch.py --torch_mallocs=reuse`` times torch; ``--malloc=system`` leaves glibc's as it is.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Events that are the executor's own (they hold the thunks), not work.
EXECUTOR = ("ThunkExecutor", "end: ", "SlinkyThreadPool")
ONEDNN_TARGET = re.compile(r"%?(ffi_call[.\d]*) = .*custom_call_target=\"jtransfer_onednn_conv_(\w+)\"")
KINDS = (
    ("ynn fusion (dots, reductions)", re.compile(r"ynn")),
    ("xla convolution", re.compile(r"convolution")),
    ("elementwise/loop fusion", re.compile(r"fusion")),
    ("reduce / reduce-window", re.compile(r"reduce")),
    ("copy/transpose", re.compile(r"^copy|transpose")),
)


def kind_of(name: str, onednn: dict[str, str]) -> str:
  if name in onednn:
    return f"oneDNN {onednn[name]}"
  for kind, pattern in KINDS:
    if pattern.search(name):
      return kind
  return "other"


def trace_events(trace_dir: str) -> list[dict]:
  """The complete ('X') events of the Perfetto trace under ``trace_dir``."""
  files = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  if not files:
    raise SystemExit(f"no perfetto_trace.json.gz under {trace_dir}")
  with gzip.open(files[0], "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  return [e for e in events if e.get("ph") == "X" and "dur" in e]


def union(intervals) -> float:
  """Total length covered by (start, end) intervals."""
  total, end = 0.0, float("-inf")
  for a, b in sorted(intervals):
    if a > end:
      total += b - a
      end = b
    elif b > end:
      total += b - end
      end = b
  return total


def profile_jax(args) -> None:
  import bench_vs_torch
  import jax
  compiled, run_once = bench_vs_torch.jax_step(
      {"setting": args.setting, "task": args.task, "impl": args.impl})
  onednn = {m.group(1): m.group(2) for m in ONEDNN_TARGET.finditer(compiled.as_text())}
  for _ in range(args.warmup):
    run_once()
  trace_dir = args.keep or tempfile.mkdtemp(prefix="jtransfer_profile_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    start = time.perf_counter()
    for _ in range(args.steps):
      run_once()
    wall = (time.perf_counter() - start) / args.steps * 1e3
  events = trace_events(trace_dir)
  if not args.keep:
    shutil.rmtree(trace_dir)
  steps = [(e["ts"], e["ts"] + e["dur"]) for e in events
           if e["name"] == "ThunkExecutor::Execute (wait for completion)"]
  # Each thunk's interval, clipped to the step that holds it (ms).
  work = []
  for e in events:
    if not e.get("args", {}).get("hlo_op") or e["name"].startswith(EXECUTOR):
      continue
    for a, b in steps:
      lo, hi = max(a, e["ts"]), min(b, e["ts"] + e["dur"])
      if lo < hi:
        work.append((e["name"], lo / 1e3, hi / 1e3))
  if not steps or not work:
    raise SystemExit(f"the trace under {trace_dir} holds no XLA:CPU thunk events")
  n = len(steps)
  step_ms = sum(b - a for a, b in steps) / 1e3 / n
  all_ms = union((a, b) for _, a, b in work) / n
  onednn_ms = union((a, b) for name, a, b in work if name in onednn) / n

  by_kind = collections.defaultdict(lambda: [0.0, 0])
  by_name = collections.defaultdict(lambda: [0.0, 0])
  for name, a, b in work:
    kind = kind_of(name, onednn)
    by_kind[kind][0] += (b - a) / n
    by_kind[kind][1] += 1 / n
    # ynn_fusion.N are many small reductions: merged; loop fusions are named by what they fuse.
    label = re.sub(r"\.\d+$", "", name) if kind.startswith(("ynn", "other")) else name
    by_name[label, kind][0] += (b - a) / n
    by_name[label, kind][1] += 1 / n

  print(f"jtransfer {args.setting} {args.task} conv_impl={args.impl}  "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  load {os.getloadavg()[0]:.1f}")
  print(f"  wall {wall:.0f} ms/step traced ({n} steps); the executor's step {step_ms:.0f} ms:")
  onednn_sum = sum(v[0] for k, v in by_kind.items() if k.startswith("oneDNN"))
  print(f"    oneDNN calls running     {onednn_ms:8.0f} ms  (their events sum {onednn_sum:.0f}: "
        f"{onednn_sum - onednn_ms:.0f} ms waiting on another call)")
  print(f"    other thunks, no oneDNN  {all_ms - onednn_ms:8.0f} ms")
  print(f"    no thunk running         {step_ms - all_ms:8.0f} ms")
  print(f"  {'event sums by kind':<34}{'ms/step':>9}{'events':>8}")
  for kind, (ms, count) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
    print(f"    {kind:<32}{ms:>9.1f}{count:>8.0f}")
  print(f"  the {args.top} largest non-oneDNN events by name:")
  rest = [(k, v) for k, v in by_name.items() if not k[1].startswith("oneDNN")]
  for (name, kind), (ms, count) in sorted(rest, key=lambda kv: -kv[1][0])[:args.top]:
    print(f"    {name:<40}{ms:>8.1f} ms {count:>5.0f}x  {kind}")


def profile_torch(args) -> None:
  import bench_vs_torch
  import torch  # noqa: F401
  from torch.profiler import ProfilerActivity, profile
  run_once, info = bench_vs_torch.torch_step_worker({"setting": args.setting, "task": args.task})
  for _ in range(args.warmup):
    run_once()
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    start = time.perf_counter()
    for _ in range(args.steps):
      run_once()
    wall = (time.perf_counter() - start) / args.steps * 1e3
  ops = sorted(prof.key_averages(), key=lambda k: -k.self_cpu_time_total)
  total = sum(k.self_cpu_time_total for k in ops) / 1e3 / args.steps
  conv = {"aten::mkldnn_convolution": "forward", "aten::convolution_backward": "both gradients"}
  conv_ms = sum(k.self_cpu_time_total for k in ops if k.key in conv) / 1e3 / args.steps
  print(f"torch {info['torch']} {args.setting} {args.task}, {info['threads']} threads  "
        f"load {os.getloadavg()[0]:.1f}")
  print(f"  wall {wall:.0f} ms/step profiled; self CPU time {total:.0f} ms: convolutions "
        f"{conv_ms:.0f}, the rest {total - conv_ms:.0f}")
  print(f"  the {args.top} largest operators by self CPU time:")
  for k in ops[:args.top]:
    note = f"  ({conv[k.key]})" if k.key in conv else ""
    print(f"    {k.key:<40}{k.self_cpu_time_total / 1e3 / args.steps:>8.1f} ms "
          f"{k.count / args.steps:>5.0f}x{note}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--setting", default="224", help="a key of bench_vs_torch.SETTINGS")
  parser.add_argument("--task", default="train", choices=("train", "forward", "probe"))
  parser.add_argument("--impl", default="auto", help="jtransfer's conv_impl")
  parser.add_argument("--torch", action="store_true",
                      help="then profile torch's step too (each side in a process of its own)")
  parser.add_argument("--only_jax", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--only_torch", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--malloc", choices=("reuse", "system"), default="reuse")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--keep", default="", help="write the jax trace to this directory")
  args = parser.parse_args()
  if args.only_jax or args.only_torch:
    if args.malloc == "reuse":  # before either framework starts its threads
      from jtransfer.cpu import hostmem
      hostmem.reuse_freed_memory()
    return profile_torch(args) if args.only_torch else profile_jax(args)
  # Each side in a process of its own, one after the other, as bench_vs_torch.py runs them.
  argv = [a for a in sys.argv[1:] if a != "--torch"]
  subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--only_jax"], check=True)
  if args.torch:
    subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--only_torch"], check=True)

if __name__ == "__main__":
  main()
