"""Measures the img/s that `data.train_iterator` delivers, beside the train step's img/s.

    .venv/bin/python scripts/bench_input_pipeline.py               # uci_digits and mnist5k
    .venv/bin/python scripts/bench_input_pipeline.py --datasets=mnist5k --steps=200
    .venv/bin/python scripts/bench_input_pipeline.py --image_size=16 --batch_size=32 --with_step

`--with_step` also times, in the same run, the jitted full fine-tune train step of the demo's
model (small-stem ResNet-18, base_planes=16, adamw) on batches of the same shape, and prints the
ratio pipeline img/s ÷ step img/s (the issue asks for ≥ 3).

Default configuration: 32 px, 3 channels, global batch 128, default train preprocessing
(decode, resize, grayscale->RGB, random shift, ImageNet normalization), cache on, one
process. The first `--warmup` batches (which fill the cache) are not timed; the timed
batches are process-local numpy arrays, as the trainer receives them. The offline
datasets are prepared into --data_dir on first use (default: a temporary directory).
"""
import argparse
import itertools
import tempfile
import time

from jtransfer import data


def measure(cfg, *, steps, warmup, seed=0):
  """-> img/s over `steps` batches after `warmup` batches."""
  it = data.train_iterator(cfg, seed=seed)
  for batch in itertools.islice(it, warmup):
    pass
  start = time.perf_counter()
  images = 0
  for batch in itertools.islice(it, steps):
    images += batch['image'].shape[0]
  return images / (time.perf_counter() - start)


def measure_step(image_size, batch_size, *, steps=30, base_planes=16):
  """-> img/s of the jitted full fine-tune step of the demo model (warm-up excluded)."""
  import jax
  from ml_collections import config_dict
  import numpy as np

  from jtransfer import models, optim
  from jtransfer.train import losses
  from jtransfer.train.state import TrainState
  from jtransfer.train.step import make_train_step

  model = models.create('resnet18', num_classes=10, small_stem=True, base_planes=base_planes)
  x = np.random.default_rng(0).standard_normal((batch_size, image_size, image_size, 3))
  batch = {'image': x.astype(np.float32), 'label': np.arange(batch_size, dtype=np.int32) % 10}
  variables = model.init(jax.random.key(0), batch['image'][:1])
  rules = ((r'.*', 1.0),)
  cfg = optim.get_config()
  tx = optim.build_optimizer(cfg, rules, variables['params'], total_steps=1000)
  mask = optim.trainable_mask(optim.label_params(variables['params'], rules))
  loss_fn = losses.make_loss_fn(model, config_dict.ConfigDict({'label_smoothing': 0.0}))
  step = jax.jit(make_train_step(loss_fn, tx, mask))
  state = TrainState.create(params=variables['params'], batch_stats=variables['batch_stats'], tx=tx)
  key = jax.random.key(0)
  for _ in range(3):
    state, m = step(state, batch, key)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch, key)
  jax.block_until_ready(m)
  return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--datasets', default='uci_digits,mnist5k')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--image_size', type=int, default=32)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--warmup', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--with_step', action='store_true',
                      help='also time the demo model\'s train step and print the ratio')
  args = parser.parse_args(argv)
  data_dir = args.data_dir or tempfile.mkdtemp(prefix='jtransfer_tfds_')
  results = {}
  for name in args.datasets.split(','):
    cfg = data.get_config()
    cfg.dataset, cfg.data_dir = name, data_dir
    cfg.image_size, cfg.batch_size = args.image_size, args.batch_size
    data.dataset_info(cfg)  # Prepares the offline dataset outside the timing.
    rates = [measure(cfg, steps=args.steps, warmup=args.warmup)
             for _ in range(args.repeats)]
    results[name] = max(rates)
    print(f'{name}: {results[name]:,.0f} img/s (best of {args.repeats}: '
          f'{", ".join(f"{r:,.0f}" for r in rates)}; {args.image_size} px, '
          f'batch {args.batch_size}, {args.steps} timed batches)', flush=True)
  if args.with_step:
    step = measure_step(args.image_size, args.batch_size)
    print(f'train step (demo model, full fine-tune): {step:,.0f} img/s', flush=True)
    for name, rate in results.items():
      print(f'{name}: pipeline / step = {rate / step:.1f}x', flush=True)
    results['step'] = step
  return results


if __name__ == '__main__':
  main()
