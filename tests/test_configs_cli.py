"""Experiment configs load from any working directory: the command line puts the folder holding the
top-level ``configs`` package on ``sys.path`` (``jtransfer.configs_path``) before absl loads the
file, whose ``from configs import common`` then works; a missing file is an error naming it."""

import os
import subprocess
import sys

import pytest
import support as testing

from jtransfer import configs_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd):
  return subprocess.run([testing.PYTHON, *args], cwd=cwd, env=testing.subprocess_env(),
                        capture_output=True, text=True, timeout=300)


def test_train_cli_loads_a_config_from_another_directory(tmp_path):
  # The child's environment alone does not make the repository's configs/ importable from here...
  plain = _run(["-c", "import configs"], cwd=tmp_path)
  assert plain.returncode != 0 and "No module named 'configs'" in plain.stderr
  # ...the command line does: the typo is resolved against the loaded config (which imports
  # configs.finetune_digits and configs.common), so the run stops before training, naming it.
  config = os.path.join(ROOT, "configs", "distill_digits.py") + ":runlocal"
  proc = _run(["-m", "jtransfer.main", f"--config={config}", f"--workdir={tmp_path / 'run'}",
               "--config.train.num_step=5"], cwd=tmp_path)
  assert "ModuleNotFoundError" not in proc.stderr, proc.stderr[-3000:]
  assert proc.returncode != 0
  assert 'Did you mean "num_steps"' in proc.stderr, proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / "run")  # nothing ran


@pytest.mark.parametrize("module", ["jtransfer.main", "jtransfer.benchmark"])
def test_a_missing_config_file_is_an_error_naming_it(tmp_path, module):
  proc = _run(["-m", module, "--config=configs/nope.py:quick", f"--workdir={tmp_path / 'run'}"],
              cwd=tmp_path)
  assert proc.returncode != 0
  assert "'configs/nope.py' does not exist" in proc.stderr and str(tmp_path) in proc.stderr
  assert "Traceback" not in proc.stderr


def test_package_root_is_the_folder_above_the_top_level_package(tmp_path):
  assert configs_path.package_root(os.path.join(ROOT, "configs", "benchmark", "demo.py")) == ROOT
  assert configs_path.package_root(os.path.join(ROOT, "configs", "common.py")) == ROOT
  (tmp_path / "lone.py").write_text("")
  assert configs_path.package_root(str(tmp_path / "lone.py")) is None  # no package: nothing added


def test_add_puts_the_root_first_on_sys_path_once(monkeypatch):
  monkeypatch.setattr(sys, "path", ["/elsewhere", ROOT])
  argv = ["prog", f"--config={ROOT}/configs/finetune_digits.py:runlocal", "--workdir=w"]
  assert configs_path.add_from_argv(argv) == ROOT
  assert sys.path == [ROOT, "/elsewhere"]
  assert configs_path.add_from_argv(["prog", "--workdir=w"]) is None  # no --config: nothing


@pytest.mark.parametrize("argv,want", [
    (["p", "--config=a/b.py:quick,x"], "a/b.py"),
    (["p", "--config", "a/b.py"], "a/b.py"),
    (["p", "-config=a/b.py"], "a/b.py"),
    (["p", "--config=a.py", "--config.train.num_steps=3", "--config=b.py"], "b.py"),  # last wins
    (["p", "--config.train.num_steps=3", "--configs=x.py"], None),
    (["p", "--", "--config=a.py"], None),  # after `--`: arguments, not flags
])
def test_config_file_from_argv_reads_flags_as_absl_does(argv, want):
  assert configs_path.config_file_from_argv(argv) == want
