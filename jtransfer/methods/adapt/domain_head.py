"""The domain classifier of adversarial adaptation, and the freezing rules that keep it training.

    head = DomainHead((256,))                       # features -> one source-vs-target logit
    phases = with_trained_domain_head(phases, params, head=r"^fc/")

Its parameters are the top-level subtree ``domain_head/``: initialised fresh, trained under every
freezing preset, never exported.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax

from jtransfer import optim

DOMAIN_HEAD = "domain_head"


class DomainHead(nn.Module):
  """The domain classifier: an MLP from features to a source-vs-target logit (the paper's
  1024-1024, here configurable)."""
  hidden: tuple[int, ...] = (256,)

  @nn.compact
  def __call__(self, x):
    for i, h in enumerate(self.hidden):
      x = nn.relu(nn.Dense(h, name=f"hidden{i}")(x))
    return nn.Dense(1, name="out")(x)[..., 0]


def with_trained_domain_head(phases: list, params: Any, *, head: str, strategy: str = "") -> list:
  """Each phase's rules, with ``(^domain_head/, 1.0)`` in front where they would leave any
  domain head parameter frozen or unmatched (the classifier must learn for the reversal to mean
  anything). Raises ValueError when no phase trains any backbone parameter: the reversed gradient
  would then reach nothing, and DANN would be a source-only probe with extra work.
  """
  pattern = f"^{DOMAIN_HEAD}/"
  head_paths = [p for p in optim.param_paths(params) if re.search(pattern, p)]
  out, backbone_trains = [], False
  for phase in phases:
    rules = optim.parse_rules(phase.param_rules)
    first = [next((r for r in rules if re.search(r.pattern, p)), None) for p in head_paths]
    if any(r is None or r.frozen for r in first):
      phase = dataclasses.replace(phase, param_rules=((pattern, 1.0),) + tuple(rules))
    out.append(phase)
    labels = optim.label_params(params, phase.param_rules)
    backbone_trains |= any(
        label != optim.FROZEN and not re.search(pattern, path) and not re.search(head, path)
        for path, label in zip(optim.param_paths(labels), jax.tree.leaves(labels)))
  if not backbone_trains:
    raise ValueError(
        f"adapt.method='dann' with freezing.strategy={strategy!r}: no phase trains a backbone "
        f"parameter (only {head} and {pattern}), so the reversed domain gradient would change "
        "nothing. Use adapt.method='source_only' for a probe, or a strategy that trains the "
        "backbone (full_ft, last_stages, layerwise_decay, ...).")
  return out


__all__ = ["DOMAIN_HEAD", "DomainHead", "with_trained_domain_head"]
