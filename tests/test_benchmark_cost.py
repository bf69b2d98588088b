"""XLA cost accounting: matmul flops, memory analysis on CPU, parameter counts, missing fields."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtransfer.benchmark import cost

M, K, N = 64, 48, 32


def _matmul():
  return jax.jit(lambda a, b: a @ b).lower(jnp.ones((M, K)), jnp.ones((K, N)))


def test_matmul_flops_are_two_m_n_k():
  c = cost.step_cost(_matmul().compile())
  assert c["flops"] == pytest.approx(2 * M * N * K, rel=0.05)
  # Reads both operands and writes the result at least once (float32).
  assert c["bytes_accessed"] >= 4 * (M * K + K * N + M * N)


def test_memory_analysis_is_present_on_cpu():
  c = cost.step_cost(_matmul().compile())
  assert c["peak_bytes"] is not None
  assert c["peak_bytes"] >= 4 * (M * K + K * N)  # the arguments are live during the step


def test_a_lowered_function_is_compiled_first():
  assert cost.step_cost(_matmul()) == cost.step_cost(_matmul().compile())


class _Stats:
  """Stands in for an older jaxlib's CompiledMemoryStats: no peak field."""
  argument_size_in_bytes, output_size_in_bytes = 100, 40
  temp_size_in_bytes, alias_size_in_bytes = 8, 40


class _Fake:
  def __init__(self, cost_result, memory_result):
    self._cost, self._memory = cost_result, memory_result

  def cost_analysis(self):
    if isinstance(self._cost, Exception):
      raise self._cost
    return self._cost

  def memory_analysis(self):
    return self._memory


def test_old_jax_list_form_and_missing_fields_give_none():
  c = cost.step_cost(_Fake([{"flops": 10.0, "bytes accessed": 4.0}], _Stats()))
  assert c == {"flops": 10.0, "bytes_accessed": 4.0, "peak_bytes": 100 + 40 + 8 - 40}
  nothing = {"flops": None, "bytes_accessed": None, "peak_bytes": None}
  assert cost.step_cost(_Fake([], None)) == nothing
  assert cost.step_cost(_Fake({"flops": -1.0}, None))["flops"] is None
  c = cost.step_cost(_Fake(NotImplementedError("no cost model"), _Stats()))
  assert c["flops"] is None and c["peak_bytes"] == 108


def test_count_params_total_and_trainable_with_a_frozen_mask():
  params = {"backbone": {"conv": {"kernel": np.zeros((3, 3, 3, 8))}, "bn": {"scale": np.zeros(8)}},
            "fc": {"kernel": np.zeros((8, 10)), "bias": np.zeros(10)}}
  assert cost.count_params(params) == 3 * 3 * 3 * 8 + 8 + 80 + 10
  mask = jax.tree.map(lambda _: False, params)
  mask["fc"] = {"kernel": True, "bias": True}
  assert cost.count_params(params, mask) == 90
  # A prefix mask: one bool per subtree.
  assert cost.count_params(params, {"backbone": False, "fc": True}) == 90
  assert cost.count_params(params, {"backbone": True, "fc": False}) == 216 + 8


def test_train_gflops():
  assert cost.train_gflops(2e9, 100) == pytest.approx(200.0)
  assert cost.train_gflops(2e9, 100, extract_flops=5e9) == pytest.approx(205.0)
  assert cost.train_gflops(None, 100) is None
  with pytest.raises(ValueError, match="steps"):
    cost.train_gflops(1.0, -1)
