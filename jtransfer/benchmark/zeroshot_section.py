"""The benchmark's zero-shot section: ESZSL on the pretrained backbone's cached features.

    config.zeroshot = dict(attributes="", splits=3, seeds=(0, 1, 2))   # '' = the digit table
    out = zeroshot_section.run(config.zeroshot, dataset, pool=(x, y), test=(tx, ty))
    zeroshot_section.markdown({dataset: out})

Per seed, ``zeroshot.class_splits`` cuts the classes into ``splits`` disjoint unseen sets (each
class unseen once per seed). ESZSL is fitted on the POOL's seen-class examples (the harness's
training pool; its (γ, λ) chosen on class-disjoint folds of those examples, ``eszsl.select``),
then scored once on the test split: ZSL (unseen-class examples among the unseen classes) and
generalised ZSL (every test example among all classes: seen, unseen, harmonic mean), each with its
chance level. No unseen-class training example and no test label enters a choice. The harness
writes ``zeroshot.json`` (per split) and ``zeroshot.md``; a restart reuses ``zeroshot.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jtransfer.methods import zeroshot

KEYS = ("attributes", "splits", "seeds")


def check(section: Any) -> None:
  """Fails on an unknown key or a bad value of ``config.zeroshot``."""
  unknown = sorted(set(section) - set(KEYS))
  if unknown:
    raise ValueError(f"zeroshot: unknown keys {unknown}; known: {list(KEYS)}")
  if int(section.get("splits", 3)) < 2:
    raise ValueError(f"zeroshot.splits={section.get('splits')!r} must be >= 2 (seen and unseen)")
  if not tuple(section.get("seeds", (0,))):
    raise ValueError("zeroshot.seeds is empty")


def attributes(section: Any, num_classes: int) -> np.ndarray:
  """The class descriptions: ``section.attributes`` (.npy/.csv, validated) or the digit table."""
  path = section.get("attributes", "")
  if not path:
    attrs = zeroshot.digit_attributes()
    if len(attrs) != num_classes:
      raise ValueError(f"zeroshot.attributes='' is the 10-digit table, but the dataset has "
                       f"{num_classes} classes: give a file with one row per class")
    return attrs
  return zeroshot.load_attributes(path, num_classes)


def run(section: Any, num_classes: int, *, pool: tuple, test: tuple) -> dict:
  """``{'splits': [per-split numbers, with 'seed'], 'summary': {metric: mean/std/min/max/n}}``."""
  attrs = attributes(section, num_classes)
  results = []
  for seed in tuple(section.get("seeds", (0,))):
    out = zeroshot.zero_shot_protocol(pool[0], pool[1], test[0], test[1], attrs,
                                      splits=int(section.get("splits", 3)), seed=int(seed))
    results += [{**r, "seed": int(seed)} for r in out["splits"]]
  return {"splits": results, "summary": zeroshot.summarize(results)}


def markdown(by_dataset: dict) -> str:
  """The table of ``{dataset: run(...)}``: per-class accuracy %, mean ± std (min–max) over splits."""
  head = ("| dataset | splits | ZSL unseen | chance | GZSL seen | GZSL unseen | GZSL H | chance |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
  rows = []
  for dataset, out in by_dataset.items():
    s = out["summary"]
    cell = lambda m: (f"{s[m]['mean'] * 100:.1f} ± {s[m]['std'] * 100:.1f} "
                      f"({s[m]['min'] * 100:.0f}–{s[m]['max'] * 100:.0f})")
    metrics = [cell(m) for m in zeroshot.protocol.METRICS]
    rows.append(f"| {dataset} | {s['zsl_unseen']['n']} | " + " | ".join(metrics) + " |")
  return ("### Zero-shot (ESZSL on the pretrained backbone's features), test split, per-class "
          "accuracy %\n\nSeen/unseen class splits; (γ, λ) chosen on seen-class folds of the "
          "training pool; mean ± std (min–max) over splits.\n\n" + head + "\n" + "\n".join(rows)
          + "\n")


__all__ = ["KEYS", "attributes", "check", "markdown", "run"]
