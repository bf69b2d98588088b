"""The training state: one pytree that jit/pmap pass through, with no functions inside.

    tx = optim.build_optimizer(cfg.optim, phase.param_rules, params, total_steps=T)
    state = TrainState.create(params=params, batch_stats=batch_stats, tx=tx, ema=True)
    ...
    state = state.next_phase(new_tx, restart=phase.restart)   # at a phase boundary

The optimizer ``tx`` lives outside the state (it is passed to ``make_train_step``), so changing
phase means a new ``tx``, a new step function and ``next_phase`` to carry the optimizer state.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jtransfer import optim


@flax.struct.dataclass
class TrainState:
  """``step``: int32 scalar, the global step (updates applied); ``ema_params``: None when off."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any = None

  @classmethod
  def create(cls, *, params, batch_stats, tx: optax.GradientTransformation, ema: bool = False,
             step: int = 0) -> "TrainState":
    """A state at global ``step`` with ``tx``'s fresh optimizer state; EMA starts at ``params``."""
    return cls(step=jnp.asarray(step, jnp.int32), params=params, batch_stats=batch_stats,
               opt_state=optim.init_opt_state(tx, params, step=step),
               ema_params=jax.tree.map(jnp.copy, params) if ema else None)

  def next_phase(self, tx: optax.GradientTransformation, *, restart: bool = False
                 ) -> "TrainState":
    """The same parameters, statistics and step under a new phase's optimizer ``tx``.

    ``restart=False`` carries the optimizer state of every rule unchanged from the previous phase
    (see ``optim.init_opt_state``); ``restart=True`` starts it fresh. Schedules follow the step.
    """
    previous = None if restart else self.opt_state
    return self.replace(opt_state=optim.init_opt_state(tx, self.params, step=int(self.step),
                                                       previous=previous))
