"""Few-shot and VTAB-1k subsets of a split, as sorted example indices.

    idx = sample_per_class(labels, shots=5, seed=0)   # 5 per class, BiT's examples-per-class
    idx = vtab1k_indices(num_examples, 'train800')    # 0..799; 'val200' is 800..999

Indices are positions in the split's fixed (TFDS or sorted-file) order. Per-class
draws use one generator per class seeded by (seed, class), so the examples chosen for a
class do not change when other classes change; a larger `shots` with the same seed is
not guaranteed to contain the smaller draw.
"""
import numpy as np

# VTAB-1k: train on the first 800 examples of the train split, validate on the next 200;
# 'train800val200' is the 1,000 used for the final run.
VTAB1K_PARTS = {'train800': (0, 800), 'val200': (800, 1000), 'train800val200': (0, 1000)}


def sample_per_class(labels, shots: int, seed: int, *, where: str = 'train') -> np.ndarray:
  """Returns the sorted indices of `shots` examples of each class present in `labels`.

  Raises ValueError naming the class when it has fewer than `shots` examples.
  """
  if shots <= 0:
    raise ValueError(f'shots must be > 0, got {shots}')
  labels = np.asarray(labels)
  chosen = []
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    if len(rows) < shots:
      raise ValueError(f'{where}: class {int(c)} has {len(rows)} examples, fewer than '
                       f'shots={shots}')
    rng = np.random.default_rng([int(seed), int(c)])
    chosen.append(rng.choice(rows, size=shots, replace=False))
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros([0], np.int64)


def vtab1k_indices(num_examples: int, part: str, *, where: str = 'train') -> np.ndarray:
  """The indices of a VTAB-1k part ('train800', 'val200', 'train800val200')."""
  if part not in VTAB1K_PARTS:
    raise ValueError(f'unknown VTAB-1k part {part!r}; known: {sorted(VTAB1K_PARTS)}')
  start, stop = VTAB1K_PARTS[part]
  if num_examples < stop:
    raise ValueError(f'{where} has {num_examples} examples; VTAB-1k {part} needs {stop}')
  return np.arange(start, stop)
