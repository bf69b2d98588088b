"""Which input size makes Lite0's ImageNet features beat raw pixels on Fashion-MNIST, judged on
held-out TRAIN images (train[3000:4000]: outside the demo's pool and validation, never the test
split): ridge on 1 / 5 / 20 per class, 10 draws from train[:3000].

    .venv/bin/python scripts/fashion_resolution.py     # ~5 min on the 2-core machine

Measured 2026-12-08, beside a test run (top-1 %, 1 / 5 / 20 per class): pixels 49.4 / 65.9 /
73.4; Lite0 features at 32 px 40.3 / 58.7 / 67.2, 64 px 49.0 / 66.7 / 75.6, 96 px 52.7 / 68.9 /
76.9.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jtransfer import models, weights
from jtransfer.benchmark import evaluators
from jtransfer.data import fewshot
from jtransfer.data.datasets import fashion_mnist
from jtransfer.train import config as train_config

SIZES = (32, 64, 96)
SHOTS = (1, 5, 20)
DRAWS = 10


def lite0_features(images: np.ndarray, size: int) -> np.ndarray:
  """Lite0's pre-logits of 28×28 grey images resized to ``size`` (the demo's normalisation)."""
  cfg = train_config.get_base_config().model
  cfg.arch, cfg.init = "efficientnet_lite0", "pkg:efficientnet_lite0"
  model = models.from_config(cfg, num_classes=None)
  variables = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))
  variables, _ = weights.merge(jax.tree.map(np.asarray, dict(variables)),
                               weights.load(cfg.init, arch=cfg.arch), skip=(r"^fc/",))
  forward = jax.jit(lambda v, x: model.apply(v, x)[1]["pre_logits"])
  out = []
  for i in range(0, len(images), 250):
    batch = jnp.asarray(images[i:i + 250], jnp.float32)
    batch = jax.image.resize(batch, (len(batch), size, size, 1), "bilinear")
    out.append(np.asarray(forward(variables, (jnp.repeat(batch, 3, -1) - 127.5) / 128)))
  return np.concatenate(out)


def ridge_top1(x, y, hx, hy, shots: int) -> float:
  """Mean held-out top-1 % of the benchmark's ridge over ``DRAWS`` draws of ``shots`` per class."""
  accs = []
  for seed in range(DRAWS):
    idx = fewshot.sample_per_class(y, shots, seed)
    out = evaluators.ridge_fewshot(x[idx], y[idx], hx, num_classes=10, l2_reg=1.0)
    accs.append(np.mean(out["predictions"] == hy))
  return round(100 * float(np.mean(accs)), 1)


def main():
  images, labels = fashion_mnist.load_split("train")
  x, y, hx, hy = images[:3000], labels[:3000], images[3000:4000], labels[3000:4000]
  flat = lambda a: a.reshape(len(a), -1).astype(np.float32)
  print("pixels", [ridge_top1(flat(x), y, flat(hx), hy, s) for s in SHOTS], flush=True)
  for size in SIZES:
    fx, fh = lite0_features(x, size), lite0_features(hx, size)
    print(f"{size} px", [ridge_top1(fx, y, fh, hy, s) for s in SHOTS], flush=True)


if __name__ == "__main__":
  main()
