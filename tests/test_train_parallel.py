"""On 8 simulated CPU devices: jit over the mesh, pmap, and one device give the same parameters
after 3 steps on the same global batch (cross-replica BatchNorm included), with XLA's own
convolutions and with ``conv_impl='auto'`` (jtransfer.cpu.conv's custom-VJP convolution; with
8 devices it keeps off the oneDNN extension: at 8 px the matmul runs layer3's 2x2 maps and
layer4's 1x1 maps keep only their live taps)."""

import json
import subprocess

import numpy as np
import pytest
import support as testing

SCRIPT = r"""
import json
import jax
import numpy as np
from jtransfer import optim
from jtransfer.train.task import Task
from jtransfer.train import parallel, trainer
import support as testing

assert jax.device_count() == 8, jax.devices()
source = testing.tiny_source(batch_size=16)
out = {}
pars = (("single", parallel.create("jit", jax.devices()[:1])), ("jit", parallel.create("jit")),
        ("pmap", parallel.create("pmap")))
for impl, (name, par) in [(impl, p) for impl in ("xla", "auto") for p in pars]:
  config = testing.tiny_config()
  config.model.conv_impl = impl
  model = trainer.build_model(config.model, 4)
  variables, _ = trainer.init_variables(model, config.model, source.info.image_shape, 0)
  phases = optim.phases(config)
  extra = trainer.extra_inputs(config, Task(config), variables)
  setup = trainer.Phases(config=config, task=None, phases=phases, params=variables["params"],
                         num_classes=4, par=par).at(0)
  state = par.put_state(trainer.create_state(variables, setup.tx, ema=False))
  it = source.train_iterator(seed=0, start_step=0)
  losses = []
  for _ in range(3):
    state, m = setup.step(state, par.put_batch(next(it)), par.put_extra(extra))
    losses.append(float(par.fetch(m)["loss"]))
  host = jax.tree.map(np.asarray, par.checkpointable(state))
  leaves = jax.tree.leaves((host.params, host.batch_stats))
  out[f"{impl}/{name}"] = {"losses": losses, "step": int(host.step),
                           "leaves": [x.tolist() for x in leaves]}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_jit_mesh_pmap_and_single_device_agree_after_3_steps_with_either_conv_impl():
  proc = subprocess.run([testing.PYTHON, "-c", SCRIPT], env=testing.subprocess_env(8),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  ref = out["xla/single"]
  assert ref["step"] == 3 and ref["losses"][0] != ref["losses"][2]
  for name in ("xla/jit", "xla/pmap", "auto/single", "auto/jit", "auto/pmap"):
    assert out[name]["step"] == 3
    np.testing.assert_allclose(out[name]["losses"], ref["losses"], rtol=1e-5, err_msg=name)
    for a, b in zip(out[name]["leaves"], ref["leaves"]):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
