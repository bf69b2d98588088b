"""Transfer strategies as data: each preset returns phases of (regex → rule) lists, nothing else.

    config.freezing = optim.get_freezing_config("gradual_unfreezing", unfreeze_steps=(100, 200))
    phases = optim.phases(config)            # [Phase(0, head only), Phase(100, + layer4), Phase(200, + layer3)]
    phase = optim.phase_at(phases, step)     # the phase in force at a global step

A phase change means: new rules → new labels, mask, optimizer (``build_optimizer(...,
schedule_start=phase.schedule_start)``), carried optimizer state (``TrainState.next_phase``) and,
with ``bn_mode='frozen'``, a model re-created with the new ``frozen_bn_patterns``. Parameters carry
over unchanged, so LP-FT's fine-tune starts from the probe's head.

Stages are regexes from the input up (the model family's ``ModelSpec.stages``: for a ResNet the stem,
layer1 ... layer4); presets count them from the head down.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Sequence

from jtransfer.optim.rules import FROZEN


@dataclasses.dataclass(frozen=True)
class Phase:
  """Rules in force from ``start_step`` (global) until the next phase starts.

  ``restart``: the phase is a new run: fresh optimizer state and a schedule starting at
  ``start_step`` (LP-FT). Otherwise the state of rules unchanged from the previous phase carries
  over and the schedule is the global one (gradual unfreezing).
  """
  start_step: int
  param_rules: tuple[tuple[str, Any], ...]
  restart: bool = False

  @property
  def schedule_start(self) -> int:
    return self.start_step if self.restart else 0


def _top_rules(stages: Sequence[str], head: str, k: int, *, decay: float = 1.0,
               head_lr_mult: float = 1.0) -> tuple:
  """Head × head_lr_mult, the last k stages × decay, decay², ...; the rest frozen."""
  if not 0 <= k <= len(stages):
    raise ValueError(f"k={k} must be between 0 and the {len(stages)} stages")
  rules = [(head, head_lr_mult)]
  rules += [(stages[-1 - i], decay ** (i + 1)) for i in range(k)]
  if k < len(stages):
    rules.append((".*", FROZEN))
  return tuple(rules)


def linear_probe(*, stages, head, head_lr_mult: float = 1.0) -> list[Phase]:
  """Only the head trains; the backbone (and its BatchNorm statistics) stay as loaded."""
  del stages
  return [Phase(0, ((head, head_lr_mult), (".*", FROZEN)))]


def last_stages(*, stages, head, k: int = 1, head_lr_mult: float = 1.0) -> list[Phase]:
  """The head and the last ``k`` stages train; earlier stages are frozen."""
  return [Phase(0, _top_rules(stages, head, k, head_lr_mult=head_lr_mult))]


def full_ft(*, stages, head, head_lr_mult: float = 1.0) -> list[Phase]:
  """Everything trains (the head's learning rate × ``head_lr_mult``)."""
  del stages
  return [Phase(0, ((head, head_lr_mult), (".*", 1.0)))]


def layerwise_decay(*, stages, head, decay: float = 0.7, head_lr_mult: float = 1.0) -> list[Phase]:
  """Everything trains; the learning rate is × decay per stage from the head (× head_lr_mult) down."""
  return [Phase(0, _top_rules(stages, head, len(stages), decay=decay, head_lr_mult=head_lr_mult))]


def gradual_unfreezing(*, stages, head, unfreeze_steps: tuple = (), decay: float = 1.0
                       ) -> list[Phase]:
  """Head first; at each of ``unfreeze_steps`` the next stage down joins (× decay per stage)."""
  steps = tuple(int(s) for s in unfreeze_steps)
  if not steps or list(steps) != sorted(set(steps)) or steps[0] <= 0:
    raise ValueError(f"unfreeze_steps must be increasing positive steps, got {unfreeze_steps}")
  if len(steps) > len(stages):
    raise ValueError(f"{len(steps)} unfreeze steps but only {len(stages)} stages")
  return [Phase(s, _top_rules(stages, head, k, decay=decay))
          for k, s in enumerate((0,) + steps)]


def lp_ft(*, stages, head, switch_step: int = 0, lp_lr_mult: float = 1.0,
          ft_lr_mult: float = 1.0) -> list[Phase]:
  """Linear probe until ``switch_step``, then a full fine-tune from the probe's head, as a new run
  (fresh optimizer state, schedule from ``switch_step``) with the learning rate × ``ft_lr_mult``."""
  del stages
  if switch_step <= 0:
    raise ValueError(f"lp_ft needs switch_step > 0, got {switch_step}")
  return [Phase(0, ((head, lp_lr_mult), (".*", FROZEN))),
          Phase(int(switch_step), ((".*", ft_lr_mult),), restart=True)]


# name -> preset; every preset takes keyword-only (stages, head, ...its own arguments).
PRESETS = {
    "linear_probe": linear_probe,
    "last_stages": last_stages,
    "full_ft": full_ft,
    "layerwise_decay": layerwise_decay,
    "gradual_unfreezing": gradual_unfreezing,
    "lp_ft": lp_ft,
}


def preset_defaults(strategy: str) -> dict:
  """The keyword arguments a preset takes beyond (stages, head), with their defaults."""
  sig = inspect.signature(PRESETS[strategy])
  return {k: p.default for k, p in sig.parameters.items()
          if p.kind == p.KEYWORD_ONLY and k not in ("stages", "head")}


def stages_and_head(config, *, spec=None) -> tuple[tuple[str, ...], str]:
  """``freezing.stages`` / ``freezing.head``, or where None, the model family's (``spec``, or the
  spec of ``config.model.arch`` when ``config`` is the experiment config)."""
  fz = config.freezing if "freezing" in config else config
  if spec is None and "model" in config:
    from jtransfer import models  # pylint: disable=g-import-not-at-top
    spec = models.get_spec(config.model.arch)
  stages = fz.stages if fz.stages is not None else getattr(spec, "stages", None)
  head = fz.head if fz.head is not None else getattr(spec, "head", None)
  if stages is None or head is None:
    raise ValueError("freezing.stages / freezing.head are None (= the model's): pass the "
                     "experiment config (with model.arch), a model spec, or set them")
  return tuple(stages), head


def head_pattern(config, *, spec=None) -> str:
  """The regex of the model's classification head (``freezing.head`` or the family's)."""
  return stages_and_head(config, spec=spec)[1]


def phases(config, *, spec=None) -> list[Phase]:
  """The phases of an experiment config (reads ``config.freezing``, see ``get_freezing_config``).

  ``config`` may also be the freezing config itself, with ``spec`` (``models.get_spec(arch)``)
  naming the stages. ``strategy='custom'`` gives one phase with ``param_rules``.
  """
  fz = config.freezing if "freezing" in config else config
  if fz.strategy == "custom":
    result = [Phase(0, tuple(tuple(r) for r in fz.param_rules))]
  elif fz.strategy in PRESETS:
    args = fz.strategy_args.to_dict() if hasattr(fz.strategy_args, "to_dict") else fz.strategy_args
    takes = preset_defaults(fz.strategy)
    unknown = sorted(set(args) - set(takes))
    if unknown:  # e.g. --config.freezing.strategy=lp_ft keeps the previous preset's arguments
      raise ValueError(f"freezing.strategy_args has {unknown}, which {fz.strategy!r} does not take "
                       f"(it takes {sorted(takes)}); set freezing.strategy_args to its arguments, "
                       "or build the section with optim.get_freezing_config(strategy, ...)")
    args = {**takes, **args}
    stages, head = stages_and_head(config, spec=spec)
    result = PRESETS[fz.strategy](stages=stages, head=head, **dict(args))
  else:
    raise ValueError(f"Unknown freezing strategy {fz.strategy!r}; known: custom, "
                     f"{', '.join(PRESETS)}")
  starts = [p.start_step for p in result]
  if starts[0] != 0 or starts != sorted(set(starts)):
    raise ValueError(f"Phases must start at step 0 and increase, got {starts}")
  return result


def phase_at(phases_: Sequence[Phase], step: int) -> int:
  """Index of the phase in force at global ``step``."""
  return max(i for i, p in enumerate(phases_) if p.start_step <= step)
