"""A trainer-shaped loop over phases (gradual unfreezing) with the real step, on a tiny model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtransfer import optim
from jtransfer.train.state import TrainState
from jtransfer.train.step import make_train_step

RNG = np.random.default_rng(0)
PARAMS = {"stage1": {"kernel": jnp.asarray(RNG.normal(size=(4, 4)), jnp.float32)},
          "stage2": {"kernel": jnp.asarray(RNG.normal(size=(4, 4)), jnp.float32)},
          "head": {"kernel": jnp.asarray(RNG.normal(size=(4, 2)), jnp.float32)}}
BATCH = {"x": jnp.asarray(RNG.normal(size=(4, 4)), jnp.float32), "y": jnp.asarray([0, 1, 0, 1])}


def loss_fn(params, stats, batch, rng):
  del rng
  h = jnp.tanh(jnp.tanh(batch["x"] @ params["stage1"]["kernel"]) @ params["stage2"]["kernel"])
  logits = h @ params["head"]["kernel"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), (stats, {})


def _adam_counts(opt_state):
  is_p = lambda x: isinstance(x, optax.transforms.PartitionState)
  part = [x for x in jax.tree.leaves(opt_state, is_leaf=is_p) if is_p(x)][0]
  return {label: int(s.inner_state[0].count) for label, s in part.inner_states.items()
          if label != optim.FROZEN}


def test_gradual_unfreezing_loop():
  config = optim.get_freezing_config("gradual_unfreezing", unfreeze_steps=(2, 4))
  config.stages, config.head = (r"^stage1/", r"^stage2/"), r"^head/"
  cfg = optim.get_config()
  cfg.update(dict(name="adam", lr=0.1, schedule="constant"))
  phases = optim.phases(config)
  state, step_fn, current, history = None, None, None, []
  for step in range(6):
    index = optim.phase_at(phases, step)
    if index != current:  # What the trainer does at a phase boundary.
      phase, current = phases[index], index
      tx = optim.build_optimizer(cfg, phase.param_rules, PARAMS, total_steps=6,
                                 schedule_start=phase.schedule_start)
      mask = optim.trainable_mask(optim.label_params(PARAMS, phase.param_rules))
      step_fn = jax.jit(make_train_step(loss_fn, tx, mask))
      state = (TrainState.create(params=PARAMS, batch_stats={}, tx=tx) if state is None
               else state.next_phase(tx, restart=phase.restart))
    before = state.params
    state, _ = step_fn(state, BATCH, jax.random.key(0))
    history.append({k: not np.array_equal(state.params[k]["kernel"], before[k]["kernel"])
                    for k in PARAMS})
  moved = [sorted(k for k, v in h.items() if v) for h in history]
  assert moved == [["head"]] * 2 + [["head", "stage2"]] * 2 + [["head", "stage1", "stage2"]] * 2
  # The head's Adam state ran through all phases; each stage's started when it was unfrozen.
  assert _adam_counts(state.opt_state) == {"^head/ lr×1": 6, "^stage2/ lr×1": 4,
                                           "^stage1/ lr×1": 2}
