"""Export to torchvision-named safetensors: loads strictly into torchvision and round-trips."""

import subprocess
import sys

import jax
import numpy as np
import pytest
import support as testing

from jtransfer import convert, export, models, weights

torch = pytest.importorskip("torch", reason="torch is in the test extra: `make test` installs it")
torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def trained_like():
  """Random Flax variables with non-trivial BN statistics, as a training run would leave them."""
  model = models.create("resnet50", num_classes=4)
  x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
  variables = model.init(testing.init_key(1), x)
  _, mut = model.apply(variables, x, train=True, mutable=["batch_stats"])
  return model, {"params": variables["params"], "batch_stats": mut["batch_stats"]}, x


def test_exported_file_loads_strictly_into_torchvision_with_equal_logits(trained_like, tmp_path):
  model, variables, x = trained_like
  path = export.to_safetensors(variables, tmp_path / "m.safetensors", arch="resnet50")
  from safetensors.torch import load_file
  tmodel = torchvision.models.resnet50(num_classes=4).eval()
  tmodel.load_state_dict(load_file(path), strict=True)
  with torch.no_grad():
    want = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  got, _ = model.apply(variables, x)
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_round_trip_is_exact(trained_like, tmp_path):
  _, variables, _ = trained_like
  path = export.to_safetensors(variables, tmp_path / "m.safetensors", arch="resnet50")
  back = convert.from_torchvision(path, "resnet50")
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_cli_exports_a_weights_dir(trained_like, tmp_path):
  _, variables, _ = trained_like
  weights.save(variables, tmp_path / "run" / "export",
               metadata={"arch": "resnet50", "num_classes": 4, "options": {}, "class_names": []})
  out = tmp_path / "out.safetensors"
  subprocess.run([sys.executable, "-m", "jtransfer.export", f"--weights={tmp_path / 'run'}",
                  f"--out={out}"], check=True, capture_output=True)
  back = convert.from_torchvision(out, "resnet50")
  np.testing.assert_array_equal(back["params"]["fc"]["bias"], np.asarray(variables["params"]["fc"]["bias"]))
