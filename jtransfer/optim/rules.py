"""Freezing as data: ordered (regex → rule) pairs label every parameter.

    rules = [(r"^fc/", 1.0), (r"^layer4/", dict(lr_mult=0.1)), (r".*", "frozen")]
    labels = optim.label_params(params, rules)   # same tree, leaves like "^fc/ lr×1" or "frozen"
    mask = optim.trainable_mask(labels)          # same tree of bools
    optim.frozen_bn_patterns(labels, "frozen")   # ('^bn1$', '^layer1/0/bn1$', ...) for models.create

A rule is ``'frozen'``, a learning-rate multiplier (float), or ``dict(lr_mult=..., schedule={...})``
whose ``schedule`` overrides schedule fields of the optimizer config (``lr``, ``schedule``,
``warmup_steps``, ...) for that group. Regexes use ``re.search`` over the '/'-joined parameter path
(``layer2/0/downsample_bn/scale``); the first matching rule wins. Every parameter must be claimed
by a rule and every rule must claim a parameter, otherwise ``label_params`` raises and lists them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

import jax

from jtransfer.optim.schedules import SCHEDULE_FIELDS

FROZEN = "frozen"
BN_MODES = ("frozen", "adapt", "running")


@dataclasses.dataclass(frozen=True)
class Rule:
  """One parsed (regex → rule) pair. ``lr_mult is None`` means frozen."""
  pattern: str
  lr_mult: float | None
  schedule: tuple[tuple[str, Any], ...] = ()  # Sorted (field, value) overrides of the schedule.

  @property
  def frozen(self) -> bool:
    return self.lr_mult is None

  @property
  def label(self) -> str:
    """The optax.partition label: equal rules in two phases share it, so their state carries."""
    if self.frozen:
      return FROZEN
    extra = "".join(f" {k}={v!r}" for k, v in self.schedule)
    return f"{self.pattern} lr×{self.lr_mult:g}{extra}"


def parse_rules(rules: Iterable[Any]) -> tuple[Rule, ...]:
  """Checks and normalises (regex, rule) pairs; raises ValueError naming the bad one."""
  parsed = []
  for i, item in enumerate(rules):
    if isinstance(item, Rule):
      parsed.append(item)
      continue
    try:
      pattern, value = item
    except (TypeError, ValueError):
      raise ValueError(f"Rule {i} must be a (regex, rule) pair, got {item!r}") from None
    if not isinstance(pattern, str):
      raise ValueError(f"Rule {i}: the regex must be a str, got {pattern!r}")
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"Rule {i}: invalid regex {pattern!r}: {e}") from None
    parsed.append(_parse_value(i, pattern, value))
  if not parsed:
    raise ValueError("No parameter rules given; use [('.*', 1.0)] to train everything.")
  return tuple(parsed)


def _parse_value(i: int, pattern: str, value: Any) -> Rule:
  if hasattr(value, "to_dict"):  # ConfigDict.
    value = value.to_dict()
  if isinstance(value, str):
    if value != FROZEN:
      raise ValueError(f"Rule {i} ({pattern!r}): unknown rule {value!r}; use 'frozen', a float "
                       "learning-rate multiplier or dict(lr_mult=..., schedule=...)")
    return Rule(pattern, None)
  if isinstance(value, Mapping):
    unknown = sorted(set(value) - {"lr_mult", "schedule"})
    if unknown:
      raise ValueError(f"Rule {i} ({pattern!r}): unknown keys {unknown}; allowed: lr_mult, schedule")
    schedule = dict(value.get("schedule") or {})
    bad = sorted(set(schedule) - set(SCHEDULE_FIELDS))
    if bad:
      raise ValueError(f"Rule {i} ({pattern!r}): {bad} are not schedule fields {SCHEDULE_FIELDS}")
    lr_mult = _check_mult(i, pattern, value.get("lr_mult", 1.0))
    return Rule(pattern, lr_mult, tuple(sorted((k, _freeze(v)) for k, v in schedule.items())))
  return Rule(pattern, _check_mult(i, pattern, value))


def _check_mult(i: int, pattern: str, value: Any) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
    raise ValueError(f"Rule {i} ({pattern!r}): the learning-rate multiplier must be a number >= 0, "
                     f"got {value!r}")
  return float(value)


def _freeze(v: Any) -> Any:
  return tuple(v) if isinstance(v, list) else v


def path_str(keypath) -> str:
  """'/'-joined names of a jax key path: ``layer1/0/conv1/kernel``."""
  return jax.tree_util.keystr(keypath, simple=True, separator="/")


def param_paths(tree) -> list[str]:
  """The '/'-joined path of every leaf, in ``jax.tree.leaves`` order."""
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def map_paths(fn, tree):
  """``jax.tree.map`` where ``fn`` receives the leaf's '/'-joined path and the leaf."""
  return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)


def rules_by_label(rules: Iterable[Any]) -> dict[str, Rule]:
  return {r.label: r for r in parse_rules(rules)}


def label_params(params, rules: Iterable[Any]):
  """The tree of partition labels of ``params`` under ``rules`` (first match wins).

  Raises ValueError listing the parameters no rule matches, and the rules that match no parameter
  (or only parameters that earlier rules already claimed).
  """
  parsed = parse_rules(rules)
  paths = param_paths(params)
  claimed = [0] * len(parsed)
  unmatched = []
  leaf_labels = []
  for path in paths:
    for i, rule in enumerate(parsed):
      if re.search(rule.pattern, path):
        claimed[i] += 1
        leaf_labels.append(rule.label)
        break
    else:
      unmatched.append(path)
      leaf_labels.append(None)
  errors = []
  if unmatched:
    shown = ", ".join(unmatched[:20]) + (" ..." if len(unmatched) > 20 else "")
    errors.append(f"{len(unmatched)} parameter(s) match no rule: {shown}. "
                  "End the rules with a catch-all such as ('.*', 'frozen').")
  for i, (rule, n) in enumerate(zip(parsed, claimed)):
    if n:
      continue
    if any(re.search(rule.pattern, p) for p in paths):
      errors.append(f"Rule {i} ({rule.pattern!r}) matches only parameters that earlier rules "
                    "already claimed.")
    else:
      errors.append(f"Rule {i} ({rule.pattern!r}) matches no parameter.")
  if errors:
    raise ValueError("Bad parameter rules:\n  " + "\n  ".join(errors))
  treedef = jax.tree.structure(params)
  return jax.tree.unflatten(treedef, leaf_labels)


def trainable_mask(labels):
  """True where the label is not frozen."""
  return jax.tree.map(lambda label: label != FROZEN, labels)


def frozen_bn_patterns(labels, bn_mode: str = "frozen") -> tuple[str, ...]:
  """Regexes for ``models.create(frozen_bn=...)``: every BatchNorm whose parameters are all frozen.

  A BatchNorm is a module whose parameters are ``scale`` (and ``bias``). ``bn_mode='adapt'`` returns
  ``()``: every BatchNorm then updates its statistics in training. ``bn_mode='running'`` returns
  every BatchNorm, trainable or not: all normalise with (and keep) their running statistics while
  trainable scale/bias still learn (Detectron's FrozenBatchNorm), so a short or small-batch
  fine-tune trains the very network it is evaluated as.
  """
  if bn_mode not in BN_MODES:
    raise ValueError(f"Unknown bn_mode {bn_mode!r}; known: {', '.join(BN_MODES)}")
  if bn_mode == "adapt":
    return ()
  modules: dict[str, list[tuple[str, str]]] = {}
  for path, label in zip(param_paths(labels), jax.tree.leaves(labels)):
    module, _, leaf = path.rpartition("/")
    modules.setdefault(module, []).append((leaf, label))
  patterns = []
  for module, leaves in modules.items():
    names = {leaf for leaf, _ in leaves}
    frozen = all(l == FROZEN for _, l in leaves) or bn_mode == "running"
    if "scale" in names and names <= {"scale", "bias"} and frozen:
      patterns.append(f"^{re.escape(module)}$")
  return tuple(patterns)
