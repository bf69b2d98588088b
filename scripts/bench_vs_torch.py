"""ResNet-18 and EfficientNet-Lite0 on this CPU, jtransfer against PyTorch: the train step, the
inference forward, and every convolution of ResNet-18 per direction (forward, input gradient,
weight gradient).

    .venv/bin/python scripts/bench_vs_torch.py                      # steps: 15-50 min, 2 cores
    .venv/bin/python scripts/bench_vs_torch.py --convs              # per-conv directions: ~10 min
    .venv/bin/python scripts/bench_vs_torch.py --settings=32 --conv_impls=xla,auto --flag_sets=dr

Steps (the default): the product's train step, built as the trainer builds it
(``make_train_step(make_loss_fn(model, loss_cfg), tx, mask)``, adamw from ``optim.get_config()``
with weight decay 0.05, one ``jit`` with the state donated) and the inference forward
(``train=False``), against torchvision's ``resnet18`` (channels_last, ``torch.optim.AdamW`` with
the same hyper-parameters, ``inference_mode`` forward) on the same batch: 224 px batch 32, 32 px
batch 128 with the ImageNet stem, 32 px batch 128 with the small stem (torch: ``conv1`` a 3×3
stride-1 conv, ``maxpool`` an Identity), and a 224-px linear probe (fc trained, the backbone and
its BatchNorms frozen; torch: ``eval()`` backbone with ``requires_grad=False``); and ``lite224``:
EfficientNet-Lite0 at 224 px, batch 32 (train step and forward), against ``efficientnet-lite-pytorch``
(the reference the Lite0 weights come from; no dropout or drop-connect on either side). 10 classes,
random weights and data (speed does not depend on them).

Every variant runs in its own process (its own ``XLA_FLAGS``; torch never shares a process with
XLA's thread pool). All variants of one row (``--interleave=row``, default; ``setting`` interleaves
every row of a setting) are compiled and warmed up, then timed round-robin, one step of each per
repetition, so a busy neighbour slows them alike: the ratios are meaningful on a loaded machine
even when the absolute times are not. Reported: medians, and ``os.getloadavg()`` before and after.

jtransfer variants: ``--conv_impls`` × ``--flag_sets``. The conv implementation goes to the model
as ``models.create(..., conv_impl=...)``, the ResNets' model option.

``--convs``: every distinct convolution of ResNet-18 at 32 px (ImageNet stem, batch 128) and
224 px (batch 32) — shapes read from the model itself — per direction, as XLA's convolution and as
the patches matmul (``jtransfer.cpu.conv``) under each flag set, and torch's
``conv2d`` / ``convolution_backward`` with one output mask at a time; also round-robin across
processes. This is the measurement behind ``conv_impl_rule``; the 'auto' column is what the rule
picks, and the network rows sum each direction over every conv of the model.

Flag sets (``XLA_FLAGS`` of the jtransfer processes; the parent's own ``XLA_FLAGS`` is ignored):
``der`` = ``--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce`` (the Makefile's),
``dr`` = ``...=dot,reduce``, ``jaxlib`` = unset (jaxlib's default YNN fusions).

Host memory: jtransfer's entry points call ``jtransfer.cpu.hostmem.reuse_freed_memory()`` (glibc keeps
freed memory, so a step's buffers are not page-faulted in again every step), and so do the jax
workers (``--jax_mallocs=reuse``; ``reuse,system`` times both). torch is timed twice by default
(``--torch_mallocs``): as it comes (glibc's malloc untouched) and with the same malloc settings,
so the table shows both what a user of each gets out of the box and the comparison with the
allocator held equal. ``--convs`` takes the first value of each option.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

FLAG_SETS = {
    "der": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
    "dr": "--xla_cpu_experimental_ynn_fusion_type=dot,reduce",
    "jaxlib": "",
}
SETTINGS = {
    "224": dict(img=224, batch=32, small_stem=False, arch="resnet18"),
    "32": dict(img=32, batch=128, small_stem=False, arch="resnet18"),
    "32s": dict(img=32, batch=128, small_stem=True, arch="resnet18"),
    # EfficientNet-Lite0 (the demo's family) against its PyTorch reference.
    "lite224": dict(img=224, batch=32, small_stem=False, arch="efficientnet_lite0"),
}
# (setting, task) rows of the steps table; 'probe' is the linear probe's train step.
ROWS = (("224", "train"), ("224", "forward"), ("224", "probe"), ("32", "train"), ("32", "forward"),
        ("32s", "train"), ("32s", "forward"), ("lite224", "train"), ("lite224", "forward"))
NUM_CLASSES = 10
WEIGHT_DECAY = 0.05
# Between two timings: lets torch's OpenMP threads stop spinning before the next process runs.
PAUSE_S = 0.02


# ------------------------------------------------------------------------------------------------
# The jtransfer side (imported in workers only, after XLA_FLAGS is set).


def jax_model(setting: dict, impl: str, frozen_bn=()):
  """ResNet-18 or EfficientNet-Lite0 with ``conv_impl=impl`` (both families' model option; Lite0's
  depthwise convolutions keep their default, ``depthwise_impl='auto'``)."""
  from jtransfer import models
  if setting["arch"] != "resnet18":
    return models.create(setting["arch"], num_classes=NUM_CLASSES, frozen_bn=frozen_bn,
                         conv_impl=impl)
  return models.create("resnet18", num_classes=NUM_CLASSES, small_stem=setting["small_stem"],
                       frozen_bn=frozen_bn, conv_impl=impl)


def jax_step(spec: dict):
  """Compiles one variant of the steps table: (the compiled step, run_once). ``run_once`` runs
  it to completion; a train step's next state becomes its next call's argument."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jtransfer import optim
  from jtransfer.train import losses
  from jtransfer.train.config import get_loss_config
  from jtransfer.train.state import TrainState
  from jtransfer.train.step import make_train_step

  setting, task, impl = SETTINGS[spec["setting"]], spec["task"], spec["impl"]
  img, batch = setting["img"], setting["batch"]
  from bench_freezing import random_variables  # the same random weights as that benchmark
  variables = random_variables(jax_model(setting, "xla"), img)
  params, stats = variables["params"], variables["batch_stats"]
  rules = (((r"^fc/", 1.0), (r".*", "frozen")) if task == "probe" else ((".*", 1.0),))
  labels = optim.label_params(params, rules)
  model = jax_model(setting, impl, optim.frozen_bn_patterns(labels, "frozen"))
  rng = np.random.default_rng(0)
  data = {"image": jnp.asarray(rng.normal(size=(batch, img, img, 3)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, NUM_CLASSES, size=(batch,)), jnp.int32)}

  if task == "forward":
    def forward(v, x):
      return model.apply(v, x, train=False)[0]
    args = [variables, data["image"]]
    compiled = jax.jit(forward).lower(*args).compile()
    threaded = False
  else:
    cfg = optim.get_config()
    cfg.weight_decay = WEIGHT_DECAY
    tx = optim.build_optimizer(cfg, rules, params, total_steps=100)
    loss_fn = losses.make_loss_fn(model, get_loss_config())
    step = make_train_step(loss_fn, tx, optim.trainable_mask(labels))
    state = TrainState.create(params=params, batch_stats=stats, tx=tx)
    args = [state, data, jax.random.key(0)]
    compiled = jax.jit(step, donate_argnums=0).lower(*args).compile()
    threaded = True

  def run_once():
    out = compiled(*args)
    jax.block_until_ready(out)
    if threaded:
      args[0] = out[0]
  return compiled, run_once


def jax_step_worker(spec: dict):
  """One variant of the steps table: (run_once, info)."""
  import jax
  _, run_once = jax_step(spec)
  info = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__}
  return run_once, info


def conv_layers(setting: dict):
  """[(name, input NHWC shape, kernel HWIO shape, strides, padding)] of every conv of ResNet-18,
  read from the model by intercepting ``nn.Conv`` during ``eval_shape``."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  plain = jax_model(setting, "xla")
  found = []

  def record(next_fun, args, kwargs, context):
    mod = context.module
    if (context.method_name == "__call__" and hasattr(mod, "kernel_size")
        and hasattr(mod, "features")):
      k = tuple(mod.kernel_size)
      found.append(("/".join(mod.scope.path), tuple(args[0].shape),
                    (*k, args[0].shape[-1], mod.features), tuple(mod.strides),
                    tuple(tuple(p) for p in mod.padding)))
    return next_fun(*args, **kwargs)
  with nn.intercept_methods(record):
    jax.eval_shape(plain.init, jax.random.key(0),
                   jnp.zeros((setting["batch"], setting["img"], setting["img"], 3)))
  return found


def distinct_convs(setting_keys):
  """{key: (setting, layer names, x shape, kernel shape, strides, padding)} over the settings."""
  out = {}
  for s in setting_keys:
    for name, x, k, st, pad in conv_layers(SETTINGS[s]):
      key = f"{s}|{x}|{k}|{st}|{pad}"
      if key not in out:
        out[key] = dict(setting=s, names=[], x=x, k=k, strides=st, padding=pad)
      out[key]["names"].append(name)
  return out


def jax_convs_worker(spec: dict):
  """Timers for every distinct conv × direction × formulation: (timers, info)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jtransfer.cpu import conv as conv_lib

  rng = np.random.default_rng(0)
  timers, shapes = {}, {}
  for key, c in distinct_convs(spec["settings"]).items():
    kw = dict(strides=c["strides"], padding=c["padding"])
    x = jnp.asarray(rng.normal(size=c["x"]), jnp.float32)
    w = jnp.asarray(rng.normal(size=c["k"]) / math.sqrt(np.prod(c["k"][:3])), jnp.float32)
    y_shape = jax.eval_shape(lambda x, w: conv_lib.conv(x, w, **kw), x, w).shape
    dy = jnp.asarray(rng.normal(size=y_shape), jnp.float32)
    shapes[key] = {**c, "y": y_shape,
                   "rule": conv_lib.conv_impl_rule(c["x"], c["k"], **kw, impl="auto")._asdict()}
    # The rule's picks are timed too, so the 'auto' column exists whatever --formulations says.
    for impl in dict.fromkeys([*spec["formulations"], *shapes[key]["rule"].values()]):
      plan = conv_lib.ConvPlan(impl, impl, impl)
      fns = {
          "forward": (lambda x, w, dy, p=plan: conv_lib.conv(x, w, plan=p, **kw)),
          "input_grad": (lambda x, w, dy, p=plan:
                         jax.vjp(lambda x: conv_lib.conv(x, w, plan=p, **kw), x)[1](dy)[0]),
          "weight_grad": (lambda x, w, dy, p=plan:
                          jax.vjp(lambda w: conv_lib.conv(x, w, plan=p, **kw), w)[1](dy)[0]),
      }
      for direction, fn in fns.items():
        compiled = jax.jit(fn).lower(x, w, dy).compile()
        timers[f"{key}|{direction}|{impl}"] = (
            lambda f=compiled, a=(x, w, dy): jax.block_until_ready(f(*a)))
  info = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__, "shapes": shapes}
  return timers, info


# ------------------------------------------------------------------------------------------------
# The torch side.


def torch_resnet18(small_stem: bool):
  import torch
  import torchvision
  model = torchvision.models.resnet18(num_classes=NUM_CLASSES)
  if small_stem:
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
  return model.to(memory_format=torch.channels_last)


def torch_model(setting: dict):
  if setting["arch"] == "resnet18":
    return torch_resnet18(setting["small_stem"])
  from efficientnet_lite_pytorch import EfficientNet
  import torch
  model = EfficientNet.from_name(setting["arch"].replace("_", "-"), num_classes=NUM_CLASSES,
                                 dropout_rate=0.0, drop_connect_rate=0.0)
  return model.to(memory_format=torch.channels_last)


def torch_step_worker(spec: dict):
  import torch
  import torch.nn.functional as F
  setting, task = SETTINGS[spec["setting"]], spec["task"]
  torch.manual_seed(0)
  model = torch_model(setting)
  b, img = setting["batch"], setting["img"]
  x = torch.randn(b, 3, img, img).contiguous(memory_format=torch.channels_last)
  y = torch.randint(0, NUM_CLASSES, (b,))
  if task == "forward":
    model.eval()

    def run_once():
      with torch.inference_mode():
        model(x)
  else:
    if task == "probe":  # the backbone (BatchNorms included) frozen; only fc trains
      model.eval()
      for p in model.parameters():
        p.requires_grad_(False)
      trained = list(model.fc.parameters())
      for p in trained:
        p.requires_grad_(True)
    else:
      model.train()
      trained = list(model.parameters())
    from jtransfer import optim
    cfg = optim.get_config()
    opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=(cfg.b1, cfg.b2), eps=cfg.eps,
                            weight_decay=WEIGHT_DECAY)

    def run_once():
      opt.zero_grad(set_to_none=True)
      F.cross_entropy(model(x), y).backward()
      opt.step()
  info = {"torch": torch.__version__, "threads": torch.get_num_threads()}
  return run_once, info


def torch_convs_worker(spec: dict):
  import numpy as np
  import torch
  import torch.nn.functional as F
  torch.manual_seed(0)
  timers = {}
  for key, c in distinct_convs(spec["settings"]).items():
    n, h, w_, ci = c["x"]
    kh, kw, _, co = c["k"]
    st, pad = list(c["strides"]), [p[0] for p in c["padding"]]
    assert all(p[0] == p[1] for p in c["padding"]), "torch pads symmetrically"
    cl = torch.channels_last
    x = torch.randn(n, ci, h, w_).contiguous(memory_format=cl)
    w = (torch.randn(co, ci, kh, kw) / float(np.sqrt(kh * kw * ci))).contiguous(memory_format=cl)
    y = F.conv2d(x, w, None, st, pad)
    dy = torch.randn_like(y).contiguous(memory_format=cl)

    def backward(mask, x=x, w=w, dy=dy, st=st, pad=pad):
      with torch.no_grad():
        torch.ops.aten.convolution_backward(dy, x, w, None, st, pad, [1, 1], False, [0, 0], 1, mask)

    def forward(x=x, w=w, st=st, pad=pad):
      with torch.no_grad():
        F.conv2d(x, w, None, st, pad)
    timers[f"{key}|forward|torch"] = forward
    timers[f"{key}|input_grad|torch"] = lambda b=backward: b([True, False, False])
    timers[f"{key}|weight_grad|torch"] = lambda b=backward: b([False, True, False])
  return timers, {"torch": torch.__version__, "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------------
# Worker processes and round-robin timing.


def worker_main(spec: dict):
  """Builds the timers of ``spec``, warms each up, answers 'run <id>' with seconds per call."""
  if spec.get("malloc") == "reuse":  # as jtransfer's entry points do, before any thread starts
    from jtransfer.cpu import hostmem
    hostmem.reuse_freed_memory()
  if spec["framework"] == "torch":
    import torch  # noqa: F401  (before TensorFlow, which jtransfer's imports may pull in)
  if spec["kind"] == "step":
    make = torch_step_worker if spec["framework"] == "torch" else jax_step_worker
    run_once, info = make(spec)
    timers = {"step": run_once}
  else:
    make = torch_convs_worker if spec["framework"] == "torch" else jax_convs_worker
    timers, info = make(spec)
  inner = {}
  for name, fn in timers.items():
    for _ in range(spec["warmup"]):
      fn()
    t = time.perf_counter()
    fn()
    once = time.perf_counter() - t
    # Tiny convs are repeated so one timing lasts ~50 ms: the clock's and the pipe's noise vanish.
    inner[name] = 1 if spec["kind"] == "step" else max(1, min(50, round(0.05 / max(once, 1e-6))))
  print(json.dumps({"ready": sorted(timers), "info": info}), flush=True)
  for line in sys.stdin:
    cmd, _, name = line.strip().partition(" ")
    if cmd == "quit":
      return
    t = time.perf_counter()
    for _ in range(inner[name]):
      timers[name]()
    print(json.dumps({"seconds": (time.perf_counter() - t) / inner[name]}), flush=True)


class Worker:
  """One variant's process: its own XLA_FLAGS, compiled and warmed up before any timing."""

  def __init__(self, spec: dict, flags: str | None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    if flags:
      env["XLA_FLAGS"] = flags
    self.spec = spec
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    self.ready = self.info = None

  def wait_ready(self):
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"Worker {self.spec} died before it was ready (see its stderr above)")
    msg = json.loads(line)
    self.ready, self.info = msg["ready"], msg["info"]

  def time(self, name: str) -> float:
    self.proc.stdin.write(f"run {name}\n")
    self.proc.stdin.flush()
    return json.loads(self.proc.stdout.readline())["seconds"]

  def close(self):
    try:
      self.proc.stdin.write("quit\n")
      self.proc.stdin.flush()
    except BrokenPipeError:
      pass
    self.proc.wait(timeout=60)


def round_robin(workers: list[Worker], reps: int) -> dict[tuple[int, str], list[float]]:
  """``reps`` repetitions; each times every (worker, timer) once, in a fixed order."""
  times = {(i, name): [] for i, w in enumerate(workers) for name in w.ready}
  for _ in range(reps):
    for (i, name), ts in times.items():
      ts.append(workers[i].time(name))
      time.sleep(PAUSE_S)
  return times


def load() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_group(specs: list[tuple[dict, str | None]], reps: int):
  workers = [Worker(spec, flags) for spec, flags in specs]
  try:
    for w in workers:
      w.wait_ready()
    before = os.getloadavg()
    times = round_robin(workers, reps)
    after = os.getloadavg()
  finally:
    for w in workers:
      w.close()
  return workers, times, before, after


# ------------------------------------------------------------------------------------------------
# The two benchmarks.


def variant_label(spec: dict, flag_set: str | None) -> str:
  if spec["framework"] == "torch":
    return "torch" if spec["malloc"] == "system" else "torch [malloc reuse]"
  malloc = "" if spec["malloc"] == "reuse" else " [malloc system]"
  return f"jax {spec['impl']} [{flag_set}]{malloc}"


def bench_steps(args):
  rows = [r for r in ROWS if r[0] in args.settings.split(",") and r[1] in args.tasks.split(",")]
  jax_variants = [(impl, fs, malloc) for impl in args.conv_impls.split(",")
                  for fs in args.flag_sets.split(",") for malloc in args.jax_mallocs.split(",")]
  groups = ([[r] for r in rows] if args.interleave == "row" else
            [[r for r in rows if r[0] == s] for s in dict.fromkeys(r[0] for r in rows)])
  results = []  # (setting, task, label, seconds of each repetition, load before, load after)
  for group in groups:
    specs = []
    for setting, task in group:
      base = dict(kind="step", setting=setting, task=task, warmup=args.warmup)
      for impl, fs, malloc in jax_variants:
        specs.append(({**base, "framework": "jax", "impl": impl, "flag_set": fs,
                       "malloc": malloc}, FLAG_SETS[fs]))
      for malloc in args.torch_mallocs.split(","):
        specs.append(({**base, "framework": "torch", "malloc": malloc}, None))
    print(f"timing {group} ({len(specs)} processes), load {load()}", flush=True)
    workers, times, before, after = run_group(specs, args.reps)
    for i, w in enumerate(workers):
      ts = times[(i, "step")]
      sec = statistics.median(ts)
      s = w.spec
      results.append((s["setting"], s["task"], variant_label(s, s.get("flag_set")), ts,
                      before, after))
      print(f"  {s['setting']:>4} {s['task']:<8} {variant_label(s, s.get('flag_set')):<22} "
            f"median {sec * 1e3:8.1f} ms (min {min(ts) * 1e3:8.1f})  "
            f"{SETTINGS[s['setting']]['batch'] / sec:8.1f} img/s  {w.info}", flush=True)
  print_steps_table(rows, results, statistic="median")
  # On a shared machine the medians carry the neighbours' load, and torch's OpenMP threads
  # (spinning at barriers) suffer more from oversubscription than XLA's pool: the fastest
  # repetition is the least disturbed one, so its ratios are printed too.
  print_steps_table(rows, results, statistic="min")


def print_steps_table(rows, results, *, statistic: str):
  refs = list(dict.fromkeys(r[2] for r in results if r[2].startswith("torch")))
  labels = list(dict.fromkeys(r[2] for r in results if not r[2].startswith("torch")))
  print(f"\nBy the {statistic} over repetitions:\n")
  times = " / ".join(f"× {r}" for r in refs)
  print("| setting | step | " + " | ".join(f"{r} img/s" for r in refs) + " | "
        + " | ".join(f"{l} img/s ({times})" for l in labels) + " | load avg before → after |")
  print("|---|---|" + "---:|" * (len(refs) + len(labels)) + "---|")
  names = {"224": "224 px, batch 32", "32": "32 px, batch 128, ImageNet stem",
           "32s": "32 px, batch 128, small stem", "lite224": "Lite0, 224 px, batch 32"}
  tasks = {"train": "full FT train step", "forward": "inference forward",
           "probe": "linear-probe train step"}
  pick = statistics.median if statistic == "median" else min
  for setting, task in rows:
    mine = {r[2]: r for r in results if (r[0], r[1]) == (setting, task)}
    batch = SETTINGS[setting]["batch"]
    ref_sec = [pick(mine[r][3]) for r in refs]
    cells = [f"{batch / sec:.1f}" for sec in ref_sec]
    for l in labels:
      sec = pick(mine[l][3])
      cells.append(f"{batch / sec:.1f} (" + " / ".join(f"{t / sec:.2f}×" for t in ref_sec) + ")")
    b, a = mine[refs[0]][4], mine[refs[0]][5]
    print(f"| {names[setting]} | {tasks[task]} | " + " | ".join(cells)
          + f" | {b[0]:.1f} → {a[0]:.1f} |")


def bench_convs(args):
  settings = args.conv_settings.split(",")
  flag_sets = args.flag_sets.split(",")
  formulations = args.formulations.split(",")
  specs = [(dict(kind="convs", framework="jax", settings=settings, warmup=1, flag_set=fs,
                 malloc=args.jax_mallocs.split(",")[0],
                 formulations=formulations), FLAG_SETS[fs]) for fs in flag_sets]
  specs.append((dict(kind="convs", framework="torch", settings=settings, warmup=1,
                     malloc=args.torch_mallocs.split(",")[0]), None))
  print(f"timing convs of {settings} in {len(specs)} processes, load {load()}", flush=True)
  workers, times, before, after = run_group(specs, args.reps)
  med = {}
  for (i, name), ts in times.items():
    key, direction, impl = name.rsplit("|", 2)
    col = "torch" if impl == "torch" else f"{impl} [{workers[i].spec['flag_set']}]"
    med[(key, direction, col)] = statistics.median(ts)
  shapes = workers[0].info["shapes"]
  cols = [f"{impl} [{fs}]" for fs in flag_sets for impl in formulations]
  print(f"\nload avg {before[0]:.1f} → {after[0]:.1f}; jax {workers[0].info['jax']}, "
        f"torch {workers[-1].info['torch']} ({workers[-1].info['threads']} threads); ms per call, "
        f"median of {args.reps}")
  for fs in flag_sets:
    print(f"  [{fs}] XLA_FLAGS={FLAG_SETS[fs] or '(unset)'}")
  main_fs = flag_sets[0]
  print(f"\n'auto': the rule's pick, timed under [{main_fs}]; × torch = torch time / auto time.\n")
  print("| setting | layers | input → output | kernel, stride | direction | "
        + " | ".join(cols) + " | torch | auto | auto × torch |")
  print("|---|---|---|---|---|" + "---:|" * len(cols) + "---:|---|---:|")
  totals = {}
  for key, c in shapes.items():
    n, h, w, ci = c["x"]
    oh, ow, co = c["y"][1], c["y"][2], c["y"][3]
    names = ", ".join(x.replace("/", ".") for x in c["names"])
    count = len(c["names"])
    for direction in ("forward", "input_grad", "weight_grad"):
      pick = c["rule"][direction]
      auto = med[(key, direction, f"{pick} [{main_fs}]")]
      torch_t = med[(key, direction, "torch")]
      for col in [*cols, "torch", "auto"]:
        t = auto if col == "auto" else med[(key, direction, col)]
        totals[(c["setting"], direction, col)] = totals.get((c["setting"], direction, col), 0) \
            + count * t
      print(f"| {c['setting']} | {names} | {h}×{w}×{ci} → {oh}×{ow}×{co} | {c['k'][0]}×{c['k'][1]}"
            f" s{c['strides'][0]} | {direction} | "
            + " | ".join(f"{med[(key, direction, col)] * 1e3:.2f}" for col in cols)
            + f" | {torch_t * 1e3:.2f} | {pick} | {torch_t / auto:.2f}× |")
  print("\nWhole network (each direction summed over every conv of ResNet-18, ms):\n")
  print("| setting | direction | " + " | ".join(cols) + " | torch | auto | auto × torch |")
  print("|---|---|" + "---:|" * len(cols) + "---:|---:|---:|")
  for s in settings:
    for direction in ("forward", "input_grad", "weight_grad"):
      t = {col: totals[(s, direction, col)] for col in [*cols, "torch", "auto"]}
      print(f"| {s} | {direction} | " + " | ".join(f"{t[c] * 1e3:.1f}" for c in cols)
            + f" | {t['torch'] * 1e3:.1f} | {t['auto'] * 1e3:.1f}"
            + f" | {t['torch'] / t['auto']:.2f}× |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--convs", action="store_true", help="per-conv directions, not steps")
  parser.add_argument("--settings", default="224,32,32s,lite224", help="steps: keys of SETTINGS")
  parser.add_argument("--tasks", default="train,forward,probe", help="steps: rows' tasks")
  parser.add_argument("--conv_settings", default="32,224", help="--convs: keys of SETTINGS")
  parser.add_argument("--conv_impls", default="xla,auto", help="jtransfer conv impls to time")
  parser.add_argument("--formulations", default="xla,matmul",
                      help="--convs: conv formulations to time (add onednn once `make onednn` built it)")
  parser.add_argument("--flag_sets", default="der,dr", help=f"keys of {sorted(FLAG_SETS)}")
  parser.add_argument("--jax_mallocs", default="reuse",
                      help="jtransfer's malloc policies to time (jtransfer.cpu.hostmem; its entry "
                      "points use 'reuse'; 'system' leaves glibc's malloc as it is)")
  parser.add_argument("--torch_mallocs", default="system,reuse",
                      help="torch processes to time: with glibc's malloc as it is ('system', "
                      "torch's default) and/or with jtransfer.cpu.hostmem's settings ('reuse')")
  parser.add_argument("--interleave", choices=("row", "setting"), default="row")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  if args.worker:
    return worker_main(json.loads(args.worker))
  import platform
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load()}, "
        f"python {platform.python_version()}; median of {args.reps} round-robin repetitions "
        f"after {args.warmup} warm-up", flush=True)
  bench_convs(args) if args.convs else bench_steps(args)
  print(f"load avg at the end: {load()}")


if __name__ == "__main__":
  main()
