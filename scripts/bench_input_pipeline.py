"""Measures the img/s that `data.train_iterator` delivers for the demo configuration.

    .venv/bin/python scripts/bench_input_pipeline.py               # uci_digits and mnist5k
    .venv/bin/python scripts/bench_input_pipeline.py --datasets=mnist5k --steps=200

Demo configuration: 32 px, 3 channels, global batch 128, default train preprocessing
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--datasets', default='uci_digits,mnist5k')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--image_size', type=int, default=32)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--warmup', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=3)
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
  return results


if __name__ == '__main__':
  main()
