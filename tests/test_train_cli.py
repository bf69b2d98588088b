"""The command line: a locked config (a typo is an error naming it) and a run through the CLI on the
offline uci_digits data (resuming is tested in test_train_resume.py and test_train_trainer.py)."""

import json
import os
import subprocess

import pytest
import support as testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, cache_dir=None):
  return subprocess.run([testing.PYTHON, "-m", "jtransfer.main", *args], cwd=ROOT,
                        env=testing.subprocess_env(cache_dir=cache_dir), capture_output=True,
                        text=True, timeout=600)


def test_unknown_config_key_is_an_error_naming_it(tmp_path):
  proc = _cli("--config=configs/finetune_digits.py:runlocal", f"--workdir={tmp_path}",
              "--config.train.num_step=5")
  assert proc.returncode != 0
  assert "num_step" in proc.stderr
  assert not os.path.exists(tmp_path / "config.json")  # nothing ran


@pytest.mark.slow
def test_cli_fine_tunes_on_uci_digits(tmp_path):
  workdir = tmp_path / "run"
  args = ("--config=configs/finetune_digits.py:runlocal", f"--workdir={workdir}",
          "--config.train.num_steps=4", "--config.train.eval_every=4", "--config.train.ckpt_every=2",
          "--config.data.eval_batch_size=450")
  first = _cli(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "100.0% (4/4), ETA" in first.stderr  # CLU's progress report
  with open(workdir / "result.json") as f:
    result = json.load(f)
  assert result["eval"]["num_examples"] == 450 and result["num_classes"] == 10
  with open(workdir / "config.json") as f:
    assert json.load(f)["data"]["dataset"] == "uci_digits"
  assert os.listdir(workdir / "tensorboard") and os.path.isdir(workdir / "export" / "variables")
