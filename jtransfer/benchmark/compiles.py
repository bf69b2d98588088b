"""Time spent compiling, counted from JAX's own monitoring events (``jax.monitoring``).

    with compiles.Meter() as m:
      trainer.train_and_evaluate(cfg, run_dir)
    m.summary()   # {'compile_s': 21.4, 'programs': 9, 'cache_hits': 7, 'fresh': {'jit(step)': 2}, ...}

``compile_s`` is what a run paid before its programs could run: tracing to a jaxpr, lowering to
StableHLO and the backend's compile (which, with the persistent compilation cache on, is the cache
read on a hit). ``programs`` counts backend compiles requested (programs ``jax.jit`` already held in
memory, including those ``train.programs`` shares between runs, request none); of those,
``cache_requests`` consulted the persistent cache and ``cache_hits`` were served by it. ``fresh``
counts, by name (``'jit(step)'``), the programs the backend compiled rather than read: new ones, or
ones an earlier process compiled under ``jax_persistent_cache_min_compile_time_secs`` (not
written). Events are counted in every thread while the meter is entered.
"""

from __future__ import annotations

import threading

from jax import monitoring

_SPANS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_s",
}
_COUNTS = {
    "/jax/compilation_cache/compile_requests_use_cache": "cache_requests",
    "/jax/compilation_cache/cache_hits": "cache_hits",
}
_BACKEND = "/jax/core/compile/backend_compile_duration"
_HIT = "/jax/compilation_cache/cache_hits"
FIELDS = ("compile_s", "trace_s", "lower_s", "backend_s", "programs", "cache_requests",
          "cache_hits", "fresh")
_COUNT_FIELDS = ("programs", "cache_requests", "cache_hits")


def empty() -> dict:
  """A summary with nothing counted."""
  return {k: {} if k == "fresh" else 0 if k in _COUNT_FIELDS else 0.0 for k in FIELDS}


def add(a: dict, b: dict) -> dict:
  """Two summaries summed field by field (a record without one counts as ``empty()``)."""
  out = {k: a.get(k, 0) + b.get(k, 0) for k in FIELDS if k != "fresh"}
  fresh = dict(a.get("fresh", {}))
  for name, n in b.get("fresh", {}).items():
    fresh[name] = fresh.get(name, 0) + n
  return {**out, "fresh": fresh}


def _union(spans: list[tuple[float, float]]) -> float:
  """Seconds covered by ``spans`` (a nested ``jax.jit``'s trace lies inside its caller's)."""
  total, reach = 0.0, float("-inf")
  for start, end in sorted(spans):
    if end > reach:
      total += end - max(start, reach)
      reach = end
  return total


class Meter:
  """Counts compile events between ``__enter__`` and ``__exit__`` (re-entering adds to them)."""

  def __init__(self):
    self._spans: dict[str, list[tuple[float, float]]] = {f: [] for f in _SPANS.values()}
    self._counts = {k: 0 for k in _COUNT_FIELDS}
    self._fresh: dict[str, int] = {}
    self._served = threading.local()  # this thread's pending compile: read from the cache?
    self._lock = threading.Lock()

  def _on_span(self, event: str, start: float, end: float, **kwargs) -> None:
    field = _SPANS.get(event)
    if field is not None:
      with self._lock:
        self._spans[field].append((float(start), float(end)))
        if event == _BACKEND:
          self._counts["programs"] += 1
          if not getattr(self._served, "hit", False):
            name = str(kwargs.get("fun_name", "?"))
            self._fresh[name] = self._fresh.get(name, 0) + 1
          self._served.hit = False

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    field = _COUNTS.get(event)
    if field is not None:
      # A compile's request and hit events come before its backend span ends, in its thread.
      self._served.hit = event == _HIT
      with self._lock:
        self._counts[field] += 1

  def __enter__(self) -> Meter:
    monitoring.register_event_time_span_listener(self._on_span)
    monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    monitoring.unregister_event_time_span_listener(self._on_span)
    monitoring.unregister_event_listener(self._on_event)

  def summary(self) -> dict:
    """The counts so far: ``FIELDS``, seconds (overlaps counted once), counts, fresh by name."""
    with self._lock:
      out = {f: _union(spans) for f, spans in self._spans.items()}
      out["compile_s"] = _union([s for spans in self._spans.values() for s in spans])
      return {**out, **self._counts, "fresh": dict(self._fresh)}


__all__ = ["FIELDS", "Meter", "add", "empty"]
