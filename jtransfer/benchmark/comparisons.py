"""The benchmark's declared questions: paired comparisons named in the config before the run, each
tested in every (dataset, shots) cell both variants have, Holm-corrected over the whole family.

    config.protocol.comparisons = (("LP-FT vs FT, OOD", "lp_ft", "full_finetune", "ood"), ...)
    results = comparisons.evaluate(rows, config.protocol.comparisons, level=0.95)
    text = comparisons.markdown(results, level=0.95)

A comparison is ``(name, a, b, metric)``: the difference a − b in top-1 percentage points, paired
over the draws both variants have in a cell; ``metric`` 'test' (test top-1) or 'ood' (the mean
over the shifted test sets). Only declared comparisons are tested, so the family — and Holm's
correction — is fixed before any number is seen; there is no "best" mark and nothing is chosen
after the fact.
"""

from __future__ import annotations

from collections import defaultdict

from jtransfer.benchmark import plots, stats

__all__ = ["METRICS", "check", "evaluate", "markdown", "section", "settings"]

METRICS = ("test", "ood")


def check(declared, variants) -> None:
  """Fails naming the first malformed comparison or unknown variant."""
  names = set()
  for i, c in enumerate(declared or ()):
    where = f"protocol.comparisons[{i}]"
    if len(c) != 4:
      raise ValueError(f"{where}={c!r}: expected (name, a, b, metric)")
    name, a, b, metric = c
    if name in names:
      raise ValueError(f"{where}: the name {name!r} is used twice")
    names.add(name)
    for v in (a, b):
      if v not in variants:
        raise ValueError(f"{where}: unknown variant {v!r}; known: {', '.join(variants)}")
    if a == b:
      raise ValueError(f"{where}: compares {a!r} with itself")
    if metric not in METRICS:
      raise ValueError(f"{where}: metric {metric!r}; known: {METRICS}")


def _per_draw(rows, metric) -> dict:
  """(dataset, shots, variant) -> {seed: value in points}."""
  out = defaultdict(dict)
  for r in rows:
    value = r.get("test_top1", r.get("accuracy")) if metric == "test" else r.get("ood_mean")
    if value is not None:
      out[r["dataset"], r["shots"], r["variant"]][r["seed"]] = 100.0 * float(value)
  return out


def evaluate(rows, declared, *, level: float = 0.95) -> list[dict]:
  """One result per (comparison, dataset, shots) with data for both sides: ``stats.paired``'s
  fields plus ``p_holm`` (over every result that has a test)."""
  out = []
  per = {m: _per_draw(rows, m) for m in METRICS}
  cells = sorted({(r["dataset"], r["shots"]) for r in rows},
                 key=lambda c: (c[0], plots.shots_key(c[1])))
  for name, a, b, metric in declared or ():
    for dataset, shots in cells:
      pa, pb = per[metric].get((dataset, shots, a)), per[metric].get((dataset, shots, b))
      if pa and pb and set(pa) & set(pb):
        out.append({"name": name, "a": a, "b": b, "metric": metric, "dataset": dataset,
                    "shots": shots, **stats.paired(pa, pb, level=level)})
  tested = {i: r["p_t"] for i, r in enumerate(out) if r["p_t"] is not None}
  adjusted = stats.holm(tested)
  for i, r in enumerate(out):
    r["p_holm"] = adjusted.get(i)
  return out


def _p(x) -> str:
  return "—" if x is None else (f"{x:.2g}" if x >= 0.001 else "<0.001")


def _ci(r) -> str:
  return "—" if r["ci_low"] is None else f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"


def markdown(results: list[dict], *, level: float = 0.95) -> str:
  """The declared comparisons as a table, with how to read it."""
  if not results:
    return "No declared comparison had data for both sides (`protocol.comparisons`)."
  family = sum(r["p_t"] is not None for r in results)
  lines = ["| question | cell | a − b (points) | " + f"{level:.0%} t-interval | draws | W/T/L | "
           "p (t) | p Holm | p Wilcoxon | p sign-flip |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    metric = "OOD" if r["metric"] == "ood" else "test"
    lines.append(
        f"| {r['name']} (`{r['a']}` − `{r['b']}`, {metric}) | {r['dataset']}, {r['shots']}/class "
        f"| {r['mean_diff']:+.1f} | {_ci(r)} | {r['n']} | {r['wins']}/{r['ties']}/{r['losses']} "
        f"| {_p(r['p_t'])} | {_p(r['p_holm'])} | {_p(r['p_wilcoxon'])} | "
        f"{_p(r['p_signflip'])} |")
  if not family:
    return "\n".join(lines + ["", "No cell had two draws of both sides: no test is possible."])
  smallest = min(r["n"] for r in results if r["p_t"] is not None)
  lines += ["", f"Paired over the draws both variants have (a draw fixes the few-shot sample, the "
            "head's init and the data order). The primary test is the paired t-test (its "
            f"interval excludes 0 exactly when p < {1 - level:.2g}); the p-values are "
            f"Holm-adjusted over the {family} tests of this declared family (p Holm). "
            "Wilcoxon and sign-flip are exact tests that assume no normality, shown as checks: "
            f"with n draws their smallest p is 2/2^n (n = {smallest}: {2 / 2 ** smallest:.2g})."
            " A cell with one draw has no test."]
  return "\n".join(lines)


def settings(protocol) -> tuple[float, tuple]:
  """``(level, declared comparisons)`` of a protocol ConfigDict (or dict); defaults for None."""
  if protocol is None:
    return 0.95, ()
  return float(protocol.get("level", 0.95)), tuple(protocol.get("comparisons", ()) or ())


def section(rows, protocol) -> str:
  """``markdown`` of the comparisons ``protocol`` declares, evaluated on ``rows``."""
  level, declared = settings(protocol)
  return markdown(evaluate(rows or [], declared, level=level), level=level)
