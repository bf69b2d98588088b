"""compiles.Meter: compile time and programs from JAX's events, the persistent cache's hits."""

import jax
import jax.numpy as jnp
import support

from jtransfer.benchmark import compiles


def test_counts_each_program_once_and_what_the_persistent_cache_served(tmp_path):
  inner = jax.jit(lambda x: jnp.sin(x) @ x)
  outer = jax.jit(lambda x: inner(x) + 1.0)  # inner's trace runs inside outer's
  x = jnp.ones((64, 64))
  with support.compilation_cache(tmp_path / "cache"):
    with compiles.Meter() as first:
      outer(x).block_until_ready()
    a = first.summary()
    assert a["programs"] == 1 and a["cache_requests"] == 1 and a["cache_hits"] == 0
    assert a["fresh"] == {"jit(<lambda>)": 1}  # the outer program; the inner one is inlined
    assert 0 < a["trace_s"] and 0 < a["lower_s"] and 0 < a["backend_s"]
    # Spans are unioned, so the nested trace is not counted twice.
    assert max(a["trace_s"], a["backend_s"]) < a["compile_s"] <= (
        a["trace_s"] + a["lower_s"] + a["backend_s"] + 1e-9)

    with compiles.Meter() as held:  # jax.jit holds the executable: nothing is compiled
      outer(x).block_until_ready()
    assert held.summary() == compiles.empty()

    jax.clear_caches()  # as a restarted process: traced again, the executable read from disk
    with compiles.Meter() as restarted:
      outer(x).block_until_ready()
    b = restarted.summary()
    assert b["programs"] == b["cache_requests"] == b["cache_hits"] == 1 and b["fresh"] == {}
  with compiles.Meter() as outside:  # a meter counts only while entered
    pass
  jax.jit(lambda x: x * 3.0)(x).block_until_ready()
  assert outside.summary()["programs"] == 0


def test_add_sums_fields_and_treats_a_missing_record_as_empty():
  a = {**compiles.empty(), "compile_s": 1.5, "programs": 2, "cache_hits": 1,
       "fresh": {"jit(step)": 1}}
  b = {**a, "fresh": {"jit(step)": 2, "jit(init)": 1}}
  assert compiles.add(a, {}) == a
  both = compiles.add(a, b)
  assert both["programs"] == 4 and both["compile_s"] == 3.0
  assert both["fresh"] == {"jit(step)": 3, "jit(init)": 1} and a["fresh"] == {"jit(step)": 1}
  assert set(compiles.add({}, {})) == set(compiles.FIELDS)
