"""WiSE-FT interpolation: exact endpoints, the midpoint, BatchNorm statistics, strict structure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtransfer.methods import wise_ft as wise


def _variables(seed, *, head=True, classes=3):
  rng = np.random.default_rng(seed)
  f = lambda *shape: rng.normal(size=shape).astype(np.float32)
  params = {"conv1": {"kernel": f(3, 3, 2, 4)}, "bn1": {"scale": f(4), "bias": f(4)}}
  if head:
    params["fc"] = {"kernel": f(4, classes), "bias": f(classes)}
  stats = {"bn1": {"mean": f(4), "var": np.abs(f(4)) + 0.1}}
  return {"params": params, "batch_stats": stats}


def _leaves_equal_bitwise(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x).view(np.uint32), np.asarray(y).view(np.uint32))


def test_alpha_zero_is_start_and_alpha_one_is_finetuned_bitwise():
  start, tuned = _variables(0), _variables(1)
  _leaves_equal_bitwise(wise.interpolate(start, tuned, 0.0), start)
  _leaves_equal_bitwise(wise.interpolate(start, tuned, 1), tuned)


def test_midpoint_interpolates_params_and_batch_stats():
  start, tuned = _variables(0), _variables(1)
  mid = wise.interpolate(start, tuned, 0.5)
  expected = jax.tree.map(lambda a, b: (a + b) / 2, start, tuned)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), mid, expected)
  assert set(mid) == {"params", "batch_stats"}
  assert np.all(np.asarray(mid["batch_stats"]["bn1"]["var"]) > 0)  # convex: stays positive
  quarter = wise.interpolate(start, tuned, 0.25)
  np.testing.assert_allclose(quarter["params"]["fc"]["bias"],
                             0.75 * start["params"]["fc"]["bias"]
                             + 0.25 * tuned["params"]["fc"]["bias"], rtol=1e-6)


def test_keeps_the_finetuned_dtype():
  start = {"params": {"w": np.ones(3, np.float32)}}
  tuned = {"params": {"w": jnp.zeros(3, jnp.bfloat16)}}
  out = wise.interpolate(start, tuned, 0.5)
  assert out["params"]["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out["params"]["w"], np.float32), 0.5)


def test_shape_mismatch_names_the_leaf():
  start, tuned = _variables(0, classes=1000), _variables(1, classes=10)
  with pytest.raises(ValueError, match=r"params/fc/kernel: shape \(4, 1000\) in start but "
                                       r"\(4, 10\)"):
    wise.interpolate(start, tuned, 0.5)


def test_leaf_missing_from_finetuned_names_the_leaf():
  start, tuned = _variables(0), _variables(1)
  del tuned["batch_stats"]["bn1"]["var"]
  with pytest.raises(ValueError, match="batch_stats/bn1/var: in the start variables but not"):
    wise.interpolate(start, tuned, 0.5)


def test_new_head_needs_head_init():
  backbone, tuned = _variables(0, head=False), _variables(1)
  with pytest.raises(ValueError,
                     match="params/fc/kernel: only in the fine-tuned variables.*head_init"):
    wise.interpolate(backbone, tuned, 0.5)
  head_init = _variables(2)
  out = wise.interpolate(backbone, tuned, 0.5, head_init=head_init)
  np.testing.assert_allclose(out["params"]["fc"]["kernel"],
                             (head_init["params"]["fc"]["kernel"] + tuned["params"]["fc"]["kernel"])
                             / 2, rtol=1e-6)
  np.testing.assert_allclose(out["params"]["conv1"]["kernel"],
                             (backbone["params"]["conv1"]["kernel"]
                              + tuned["params"]["conv1"]["kernel"]) / 2, rtol=1e-6)
  # alpha = 1 is still the fine-tuned model bitwise, head included.
  _leaves_equal_bitwise(wise.interpolate(backbone, tuned, 1.0, head_init=head_init), tuned)
  bad_head = _variables(2, classes=7)
  with pytest.raises(ValueError, match=r"params/fc/kernel: shape \(4, 7\) in head_init"):
    wise.interpolate(backbone, tuned, 0.5, head_init=bad_head)
  with pytest.raises(ValueError, match="params/fc/kernel: .*head_init lacks it"):
    wise.interpolate(backbone, tuned, 0.5, head_init={"params": {}})


@pytest.mark.parametrize("alpha", [-0.1, 1.5, True, "0.5"])
def test_alpha_outside_the_unit_interval_is_an_error(alpha):
  with pytest.raises(ValueError, match="alpha"):
    wise.interpolate(_variables(0), _variables(1), alpha)


def test_integer_leaves_are_rejected_by_name():
  with pytest.raises(TypeError, match="params/step"):
    wise.interpolate({"params": {"step": np.int32(3)}}, {"params": {"step": np.int32(5)}}, 0.5)
