"""The harness end to end on real offline data: pretrain, grid, cached features, resume, report."""

import json
import os
import shutil

from ml_collections import config_dict
import pytest
import support

from jtransfer import optim
from jtransfer import workdir as wd
from jtransfer.benchmark import compiles, harness
from jtransfer.benchmark.kinds import trained
from jtransfer.train import programs


def _experiment(dataset, steps):
  return support.tiny_experiment(dataset, steps)


def tiny_config():
  c = config_dict.ConfigDict()
  c.pretrain = config_dict.ConfigDict({"enabled": True, "config": _experiment("mnist5k", 3)})
  c.base = _experiment("uci_digits", 2)
  c.datasets = ("uci_digits",)
  c.shots = (2,)
  c.seeds = (0, 1)
  c.shot_overrides = {}
  c.variants = config_dict.ConfigDict({
      "ridge": harness.variant("ridge"),
      "linear_probe_cached": harness.variant("linear_probe_cached", args={"steps": 20}),
      "full_finetune": harness.variant("train", freezing=optim.get_freezing_config("full_ft")),
      "distill": harness.variant("train", init="scratch", teacher="full_finetune",
                          overrides=(("model.base_planes", 4),)),
  })
  c.order = ("ridge", "linear_probe_cached", "full_finetune", "distill")
  c.zeroshot = {"attributes": "", "splits": 3, "seeds": (0,)}
  return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  import jax
  # As the CLI does: seed 1's runs reuse seed 0's compiled programs.
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  # A fresh process as far as programs go: the compile tests below count what this run compiles,
  # and an earlier test file in the same worker may have built the same tiny programs.
  jax.clear_caches()
  programs.clear()
  workdir = str(tmp_path_factory.mktemp("bench"))
  with open(os.devnull, "w") as sink:
    rows = harness.run(tiny_config(), workdir, stream=sink)
  return workdir, rows


def test_every_cell_has_one_result_with_its_config(finished):
  workdir, rows = finished
  assert len(rows) == 8
  with open(os.path.join(workdir, "results.jsonl")) as f:
    lines = [json.loads(l) for l in f]
  assert sorted(r["cell"] for r in lines) == sorted(c.id for c in harness.cells(tiny_config()))
  for r in lines:
    assert 0.0 <= r["accuracy"] <= 1.0 and r["wall_s"] > 0 and r["budget"] == 1
    assert r["config"]["data"]["train_split"] == r["splits"]["pool"] != "train"
    assert r["config"]["data"]["shots"] == 2 and r["config"]["data"]["fewshot_seed"] == r["seed"]
  ft = next(r for r in lines if r["variant"] == "full_finetune")
  assert ft["config"]["model"]["init"].endswith(os.path.join("pretrain", "export"))
  student = next(r for r in lines if r["variant"] == "distill")
  assert student["config"]["model"]["init"] == ""


def test_distillation_is_taught_by_the_same_cell_s_fine_tune(finished):
  workdir, rows = finished
  d = next(r for r in rows if r["variant"] == "distill" and r["seed"] == 1)
  assert d["config"]["loss"]["distill"]["teacher"] == os.path.join(
      workdir, "runs", "uci_digits", "full_finetune", "shots-2", "seed-1", "default", "export")
  assert d["config"]["model"]["base_planes"] == 4


def test_features_are_extracted_once_per_split(finished):
  workdir, _ = finished
  # pool + validation + test, shared by 4 cells
  assert len(os.listdir(os.path.join(workdir, "features"))) == 3


def test_the_zero_shot_section_reads_the_cached_pool_and_test_features(finished):
  workdir, _ = finished
  with open(os.path.join(workdir, "zeroshot.json")) as f:
    out = json.load(f)["uci_digits"]
  assert len(out["splits"]) == 3
  assert all(not set(r["seen"]) & set(r["unseen"]) for r in out["splits"])
  assert 0.0 <= out["summary"]["zsl_unseen"]["mean"] <= 1.0
  with open(os.path.join(workdir, "zeroshot.md")) as f:
    assert "| uci_digits | 3 |" in f.read()


def test_tables_and_plot(finished):
  workdir, _ = finished
  md = open(os.path.join(workdir, "results.md")).read()
  for v in tiny_config().order:
    assert f"| {v} |" in md
  assert os.path.getsize(os.path.join(workdir, "results.png")) > 10_000
  assert len(open(os.path.join(workdir, "results.csv")).read().splitlines()) == 1 + 8  # per cell
  assert len(open(os.path.join(workdir, "summary.csv")).read().splitlines()) == 1 + 4


def test_restart_skips_finished_cells_and_runs_the_missing_one(finished):
  workdir, _ = finished
  path = os.path.join(workdir, "results.jsonl")
  lines = open(path).read().splitlines()
  dropped = json.loads(lines[-1])
  with open(path, "w") as f:
    f.write("\n".join(lines[:-1]) + "\n")
  log = os.path.join(workdir, "log.txt")
  with open(log, "w") as sink:
    rows = harness.run(tiny_config(), workdir, stream=sink)
  out = open(log).read()
  assert "reusing pretrained weights" in out
  assert out.count("[benchmark ") == 1 and dropped["cell"] in out
  assert len(rows) == 8


def test_unknown_override_key_fails_before_running(tmp_path):
  config = tiny_config()
  config.variants.full_finetune.overrides = (("optim.lrr", 0.1),)
  with pytest.raises(KeyError, match=r"variants.full_finetune.overrides: unknown config key 'optim.lrr'"):
    harness.run(config, str(tmp_path), stream=open(os.devnull, "w"))
  assert not os.path.exists(os.path.join(tmp_path, "pretrain"))


def test_teacher_must_run_first():
  config = tiny_config()
  config.order = ("ridge", "linear_probe_cached", "distill", "full_finetune")
  with pytest.raises(ValueError, match="teacher='full_finetune' must name a variant listed before it"):
    harness.validate(config)


def test_a_workdir_belongs_to_one_config_and_one_process(finished):
  workdir, _ = finished
  changed = tiny_config()
  changed.seeds = (0, 1, 2)
  with open(os.devnull, "w") as sink, pytest.raises(ValueError, match=r"another config.*seeds"):
    harness.run(changed, workdir, stream=sink)
  before = sorted(os.listdir(workdir))
  with open(os.devnull, "w") as sink, wd.WorkdirLock(workdir), \
      pytest.raises(wd.WorkdirInUseError):
    harness.run(tiny_config(), workdir, stream=sink)
  assert sorted(os.listdir(workdir)) == before  # refused before anything was written


def test_each_cell_records_its_compiles_and_a_later_seed_reuses_the_programs(finished):
  workdir, rows = finished
  by = {r["cell"]: r for r in rows}
  for r in rows:
    assert set(r["compile"]) == set(compiles.FIELDS) and r["compile_s"] == r["compile"]["compile_s"]
  first = by["uci_digits/full_finetune/shots-2/seed-0"]["compile"]
  assert first["fresh"].get("jit(step)") == 1 and first["compile_s"] > 0  # its train step
  # The eval step is the pretraining's (same model): read back from the persistent cache.
  assert first["cache_hits"] >= 1
  # Seed 1 differs in data, head init and seed only: one process still holds every program its
  # cells run (the linear probe's data and learning rate are arguments of its one program).
  for r in rows:
    if r["seed"] == 1:
      assert r["compile"]["programs"] == 0, (r["cell"], r["compile"])
  md = open(os.path.join(workdir, "results.md")).read()
  assert "wall s (compile) 2/class" in md and "Compilation, over the 8 cells" in md


def test_costing_a_finished_run_reuses_its_compiled_step(finished):
  _, rows = finished
  row = {r["cell"]: r for r in rows}["uci_digits/full_finetune/shots-2/seed-0"]
  cfg = trained.run_config(row["run_dir"])
  with compiles.Meter() as meter:  # a new CostMeter: nothing memoised
    c = harness.CostMeter().train(cfg, row["run_dir"], cfg.train.num_steps)
  assert meter.summary()["programs"] == 0, meter.summary()  # was one more compile per program
  assert c["train_gflops"] == row["train_gflops"] > 0 and c["peak_bytes"] == row["peak_bytes"]


def test_a_new_process_reads_every_train_program_from_the_persistent_cache(finished, tmp_path):
  workdir, rows = finished
  first = {r["cell"]: r for r in rows}["uci_digits/full_finetune/shots-2/seed-0"]["compile"]
  import jax
  # What a restarted process starts from: no program in memory, the same cache directory.
  jax.clear_caches()
  programs.clear()
  shutil.copytree(os.path.join(workdir, "pretrain"), tmp_path / "pretrain")
  config = tiny_config()
  config.seeds, config.order = (0,), ("full_finetune",)
  config.variants = {"full_finetune": config.variants.full_finetune}
  config.zeroshot = {}
  with open(os.devnull, "w") as sink:
    (row,) = harness.run(config, str(tmp_path), stream=sink)
  again = row["compile"]
  assert again["cache_hits"] >= first["fresh"]["jit(step)"], again
  assert "jit(step)" not in again["fresh"], again  # nothing the first process compiled is redone
  assert row["test_top1"] == {r["cell"]: r for r in rows}[row["cell"]]["test_top1"]
