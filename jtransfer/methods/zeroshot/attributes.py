"""Class descriptions for zero-shot transfer: one attribute (or embedding) vector per class.

    from jtransfer.methods.zeroshot import attributes
    table = attributes.digit_attributes()                     # [10, 11] float64, rows = digits 0..9
    names = attributes.attribute_names(attributes.DIGIT_ATTRIBUTES_CSV)
    emb = attributes.load_attributes("class_text_embeddings.npy", num_classes=100)   # [100, D]

A class description is any real vector per class: hand-made attributes (the digit table below), or
text embeddings of the class names, which is how users plug in their own (save them as ``.npy``).
``load_attributes`` validates the file, because a mistake in it (a shifted row, a NaN, a column
copied twice) does not crash zero-shot learning, it just makes its accuracy quietly wrong:

* ``.npy``: a 2-D numeric array, one row per class, in class-index order;
* ``.csv``: lines starting with ``#`` are comments; the first other line is a header naming the
  columns; when the first header field is ``class`` that column holds class names and is not
  read as a value. Then one row per class, in class-index order.

Both are rejected (ValueError naming the file and the row/column) for a wrong number of rows, a
non-numeric, NaN or infinite value, a ragged row, a constant column (it carries nothing about the
class, and in a text embedding usually means a broken export) or two identical rows (those two
classes could never be told apart).

The digit attributes (``digit_attributes.csv``) describe the standard handwritten forms of the ten
digits as in UCI digits / MNIST, one judgement per digit, never fitted to data:

=================  ======================  ================================================
attribute          0 1 2 3 4  5 6 7 8 9    definition
=================  ======================  ================================================
loops              1 0 0 0 .5 0 1 0 2 1    closed loops (4: open-top form 0, closed form 1)
upper_loop         1 0 0 0 .5 0 0 0 1 1    a closed loop reaching the upper half
lower_loop         1 0 0 0 0  0 1 0 1 0    a closed loop reaching the lower half
vertical_stroke    0 1 0 0 1  0 0 0 0 1    a straight near-vertical stroke, >= half the height
horizontal_bar     0 0 1 0 1  1 0 1 0 0    a straight horizontal stroke (2's base, 4's bar,
                                           the top of 5 and 7)
diagonal_stroke    0 0 1 0 .5 0 0 1 0 0    a long straight diagonal (2, 7, a closed 4)
curved_stroke      1 0 1 1 0  1 1 0 1 1    any curved stroke or bowl
top_closed         1 0 1 1 0  1 0 1 1 1    a stroke runs across the top of the glyph
bottom_closed      1 0 1 1 0  1 1 0 1 0    a stroke runs across the bottom of the glyph
symmetric_lr       1 1 0 0 0  0 0 0 1 0    roughly mirror-symmetric left/right
symmetric_tb       1 1 0 1 0  0 0 0 1 0    roughly mirror-symmetric top/bottom
=================  ======================  ================================================

Known weak spots, stated rather than tuned away: 2 and 5 differ only in ``diagonal_stroke``, and
0 and 8 only in the loop counts; zero-shot accuracy on such pairs is limited by the table, not by
the learner.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

# The digit table shipped beside this module (installed editable, so a plain path works).
DIGIT_ATTRIBUTES_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "digit_attributes.csv")

# Attribute name -> definition, in the column order of digit_attributes.csv.
DIGIT_ATTRIBUTES: dict[str, str] = {
    "loops": "number of closed loops (4: 0.5, its open and closed forms are both common)",
    "upper_loop": "a closed loop reaching the upper half of the glyph",
    "lower_loop": "a closed loop reaching the lower half of the glyph",
    "vertical_stroke": "a straight near-vertical stroke over at least half the height",
    "horizontal_bar": "a straight horizontal stroke (2's base, 4's bar, the top of 5 and 7)",
    "diagonal_stroke": "a long straight diagonal stroke (2's descent, 7's stem, a closed 4)",
    "curved_stroke": "any curved stroke or bowl",
    "top_closed": "a stroke runs across the top of the glyph",
    "bottom_closed": "a stroke runs across the bottom of the glyph",
    "symmetric_lr": "roughly mirror-symmetric left/right",
    "symmetric_tb": "roughly mirror-symmetric top/bottom",
}

CLASS_COLUMN = "class"


def _check(values: np.ndarray, path: str, num_classes: int, columns: Sequence[str],
           where: Sequence[str]) -> np.ndarray:
  """The checks shared by .npy and .csv; ``where[i]`` names data row i as the file numbers it."""
  if values.shape[0] != num_classes:
    raise ValueError(f"{path}: {values.shape[0]} rows of class attributes, expected one per "
                     f"class ({num_classes})")
  if values.shape[1] == 0:
    raise ValueError(f"{path}: no attribute columns")
  bad = np.argwhere(~np.isfinite(values))
  if len(bad):
    r, c = bad[0]
    raise ValueError(f"{path}: {where[r]} (class {r}), column {columns[c]!r}: value "
                     f"{values[r, c]} is not finite")
  for c in range(values.shape[1]):
    if np.all(values[:, c] == values[0, c]):
      raise ValueError(f"{path}: column {columns[c]!r} is constant ({values[0, c]}) over all "
                       f"{num_classes} classes; it cannot tell classes apart")
  for i in range(num_classes):
    same = np.flatnonzero(np.all(values == values[i], axis=1))
    if len(same) > 1:
      j = int(same[same != i][0])
      raise ValueError(f"{path}: {where[i]} and {where[j]} (classes {i} and {j}) are identical; "
                       "zero-shot learning could never tell them apart")
  return values


def _read_csv(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """(header fields, [(1-based line number, fields)]) with '#' comments and blank lines skipped."""
  rows = []
  with open(path, newline="") as f:
    for number, fields in enumerate(csv.reader(f), start=1):
      if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
        continue
      rows.append((number, [x.strip() for x in fields]))
  if not rows:
    raise ValueError(f"{path}: empty attribute file (a header and one row per class expected)")
  return rows[0][1], rows[1:]


def load_attributes(path: str | os.PathLike, num_classes: int) -> np.ndarray:
  """The ``[num_classes, A]`` float64 class descriptions in ``path`` (.npy or .csv), validated.

  See the module docstring for the formats and the checks; every error names the file and the
  row (the 1-based line for .csv, the 0-based row for .npy) or column at fault.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npy":
    try:
      raw = np.load(path, allow_pickle=False)
    except ValueError as e:
      raise ValueError(f"{path}: not a plain numeric .npy array ({e})") from None
    if raw.ndim != 2:
      raise ValueError(f"{path}: expected a 2-D array [classes, attributes], got shape {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
      raise ValueError(f"{path}: non-numeric array of dtype {raw.dtype}")
    values = raw.astype(np.float64)
    return _check(values, path, num_classes, [str(c) for c in range(values.shape[1])],
                  [f"row {r}" for r in range(len(values))])
  if ext != ".csv":
    raise ValueError(f"{path}: unknown attribute file type {ext!r}; use .npy or .csv")
  header, rows = _read_csv(path)
  skip = 1 if header[0].lower() == CLASS_COLUMN else 0
  columns = header[skip:]
  values = np.zeros((len(rows), len(columns)))
  for i, (line, fields) in enumerate(rows):
    if len(fields) != len(header):
      raise ValueError(f"{path}: line {line} has {len(fields)} fields, the header has "
                       f"{len(header)}")
    for c, text in enumerate(fields[skip:]):
      try:
        values[i, c] = float(text)
      except ValueError:
        raise ValueError(f"{path}: line {line}, column {columns[c]!r}: {text!r} is not a "
                         "number") from None
  return _check(values, path, num_classes, columns, [f"line {line}" for line, _ in rows])


def attribute_names(path: str | os.PathLike) -> list[str]:
  """The column names of a .csv attribute file (without the ``class`` column)."""
  header, _ = _read_csv(os.fspath(path))
  return header[1:] if header[0].lower() == CLASS_COLUMN else header


def digit_attributes() -> np.ndarray:
  """The ``[10, 11]`` table of ``digit_attributes.csv``, rows = digits 0..9."""
  return load_attributes(DIGIT_ATTRIBUTES_CSV, 10)


__all__ = ["DIGIT_ATTRIBUTES", "DIGIT_ATTRIBUTES_CSV", "attribute_names", "digit_attributes",
           "load_attributes"]
