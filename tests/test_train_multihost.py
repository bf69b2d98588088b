"""Two local processes × 2 CPU devices (gloo collectives) train like one process with 4 devices."""

import json
import os
import socket
import subprocess

import numpy as np
import pytest
import support as testing

SCRIPT = r"""
import json, sys
import jax
import numpy as np
from jtransfer import weights
from jtransfer.train import checkpointing, trainer
import support as testing

workdir, port, pid, nproc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = testing.tiny_config(num_steps=3, eval_every=3, ckpt_every=3)
config.train.parallel = sys.argv[5]
config.optim.lr = 0.01  # small steps: float noise in the all-reduce order stays float noise
if nproc > 1:
  d = config.train.distributed
  d.coordinator_address, d.num_processes, d.process_id = f"127.0.0.1:{port}", nproc, pid
  d.cpu_collectives = "gloo"
result = trainer.train_and_evaluate(config, workdir, source=testing.tiny_source(batch_size=16))
assert jax.process_count() == nproc and jax.device_count() == 4, (jax.process_count(), jax.devices())
print("RESULT" + json.dumps({"pid": jax.process_index(), "local": jax.local_device_count(),
                             "top1": result["eval"]["top1"], "loss": result["eval"]["loss"]}))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir, nproc, devices_per_process, parallel="jit"):
  port = str(_free_port())
  return [subprocess.Popen([testing.PYTHON, "-c", SCRIPT, str(workdir), port, str(i), str(nproc),
                            parallel],
                           env=testing.subprocess_env(devices_per_process),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(nproc)]


def _results(procs):
  outs = []
  for p in procs:
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    outs.append(json.loads(stdout.split("RESULT", 1)[1]))
  return outs


def _exported(workdir):
  from jtransfer import weights
  return weights.load(os.path.join(workdir, "export"))


@pytest.mark.slow
def test_two_processes_of_two_devices_equal_one_process_of_four(tmp_path):
  multi = _start(tmp_path / "multi", nproc=2, devices_per_process=2)
  single = _start(tmp_path / "single", nproc=1, devices_per_process=4)
  multi, single = _results(multi), _results(single)
  assert [o["pid"] for o in multi] == [0, 1] and all(o["local"] == 2 for o in multi)
  # Both processes evaluated the whole eval split and agree with each other and with one process.
  assert multi[0] == {**multi[1], "pid": 0}
  assert multi[0]["top1"] == single[0]["top1"]
  np.testing.assert_allclose(multi[0]["loss"], single[0]["loss"], rtol=1e-5)
  a, b = _exported(tmp_path / "multi"), _exported(tmp_path / "single")
  for x, y in zip(jax_leaves(a), jax_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
  # Only process 0 wrote the record: one line per logged step, no duplicates.
  with open(tmp_path / "multi" / "metrics.jsonl") as f:
    steps = [json.loads(l)["step"] for l in f]
  assert steps == [1, 2, 3, 3]  # train at 1, 2, 3 and the eval at 3


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)
