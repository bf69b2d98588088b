"""A run killed with SIGKILL mid-way and started again with the same command ends exactly where an
uninterrupted run does: same data order, same dropout keys, across a phase change (LP-FT)."""

import json
import os
import subprocess

import numpy as np
import pytest
import support as testing

SCRIPT = r"""
import os, signal, sys
import jax, numpy as np
from jtransfer import optim
from jtransfer.train import checkpointing, inputs, trainer
import support as testing

workdir, kill_at = sys.argv[1], int(sys.argv[2])
marker = os.path.join(os.path.dirname(workdir), os.path.basename(workdir) + ".killed")


class KillingSource(inputs.ArraySource):
  # SIGKILLs this process, once, when asked for the batch of global step `kill_at`.
  def train_iterator(self, *, seed, start_step, process_index=0, process_count=1):
    it = super().train_iterator(seed=seed, start_step=start_step, process_index=process_index,
                                process_count=process_count)
    for step, batch in enumerate(it, start_step):
      if step == kill_at and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
      yield batch


config = testing.tiny_config(num_steps=7, eval_every=4, ckpt_every=2, log_every=1)
config.model.dropout_rate = 0.5  # the dropout keys must be the same after a restart
config.freezing = optim.get_freezing_config("lp_ft", switch_step=3)
train, evaluation = testing.tiny_arrays()
source = KillingSource(train, evaluation, batch_size=8, eval_batch_size=8)
result = trainer.train_and_evaluate(config, workdir, source=source)
ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), best_metric=None)
state = ck.manager.restore(ck.latest_step())["state"]  # raw arrays, as saved
ck.close()
np.savez(os.path.join(os.path.dirname(workdir), os.path.basename(workdir) + ".npz"),
         step=result["step"], *[np.asarray(x) for x in jax.tree.leaves(state)])
"""


def _run(workdir, kill_at, cache_dir):
  return subprocess.run([testing.PYTHON, "-c", SCRIPT, str(workdir), str(kill_at)],
                        env=testing.subprocess_env(cache_dir=cache_dir), capture_output=True,
                        text=True, timeout=600)


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
  cache = tmp_path / "jax_cache"
  ref = _run(tmp_path / "ref", -1, cache)
  assert ref.returncode == 0, ref.stderr[-3000:]
  # Killed when asked for step 4's batch: right after step 4's checkpoint started (async) to write.
  killed = _run(tmp_path / "run", 4, cache)
  assert killed.returncode == -9, killed.stderr[-3000:]
  steps = sorted(int(s) for s in os.listdir(tmp_path / "run" / "checkpoints") if s.isdigit())
  assert steps and steps[-1] in (2, 4)
  again = _run(tmp_path / "run", 4, cache)  # the same command
  assert again.returncode == 0, again.stderr[-3000:]
  # metrics.jsonl holds each step once: the lines the killed run wrote after its last checkpoint
  # were dropped on resume, and the restart wrote them again.
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    logged = [json.loads(l)["step"] for l in f if "train/loss" in l]
  assert logged == list(range(1, 8))
  a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "run.npz")
  assert int(a["step"]) == int(b["step"]) == 7 and len(a.files) == len(b.files) > 50
  for key in a.files:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
