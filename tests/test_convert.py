"""Golden logits: converted torchvision models give torchvision's outputs, stage by stage."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import support as testing

torch = pytest.importorskip("torch", reason="torch is in the test extra: `make test` installs it")
torchvision = pytest.importorskip("torchvision")

from jtransfer import convert, models, weights  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))
REL_TOL = 1e-4  # max abs error ≤ 1e-4 × max |reference|, float32


def random_torchvision(arch, num_classes=1000, seed=0):
  """A torchvision model with seeded random weights and randomized BatchNorm statistics."""
  torch.manual_seed(seed)
  m = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
  with torch.no_grad():
    for mod in m.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.normal_(0, 0.2)
        mod.running_mean.normal_(0, 0.2)
        mod.running_var.uniform_(0.5, 2.0)
  return m.eval()


def torch_forward(m, x_nhwc):
  """Logits and the same feature dict as the Flax model, from torchvision's modules."""
  with torch.no_grad():
    x = torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)))
    feats = {}
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    feats["stem"] = x
    for name in ("layer1", "layer2", "layer3", "layer4"):
      x = getattr(m, name)(x)
      feats[name] = x
    x = torch.flatten(m.avgpool(x), 1)
    feats["pre_logits"] = x
    logits = m.fc(x)
  to_nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1) if t.ndim == 4 else t.numpy()
  return logits.numpy(), {k: to_nhwc(v) for k, v in feats.items()}


def assert_close(got, want, what):
  err = float(np.max(np.abs(np.asarray(got, np.float64) - want)))
  scale = float(np.max(np.abs(want)))
  assert err <= REL_TOL * scale, f"{what}: max abs err {err:.3g} > {REL_TOL} x {scale:.3g}"


def check_equal(arch, variables, tmodel, size, num_classes=1000, seed=0):
  x = np.random.default_rng(seed).standard_normal((2, size, size, 3)).astype(np.float32)
  want_logits, want_feats = torch_forward(tmodel, x)
  model = models.create(arch, num_classes=num_classes)
  logits, feats = jax.jit(model.apply)(variables, x)
  assert_close(logits, want_logits, f"{arch}@{size} logits")
  for k, v in want_feats.items():
    assert_close(feats[k], v, f"{arch}@{size} {k}")


@pytest.mark.parametrize("arch,sizes", [
    ("resnet18", (224, 64)),
    ("resnet50", (224, 64)),
    ("wide_resnet50_2", (224, 64)),
    ("resnext50_32x4d", (224, 64)),
])
def test_golden_logits_and_features(arch, sizes):
  tmodel = random_torchvision(arch)
  variables = convert.from_torchvision(tmodel.state_dict(), arch)
  for size in sizes:
    check_equal(arch, variables, tmodel, size)


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
  d = tmp_path_factory.mktemp("r18")
  tmodel = random_torchvision("resnet18", num_classes=7, seed=3)
  sd = tmodel.state_dict()
  torch.save(sd, d / "r18.pth")
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "r18.safetensors"))
  return tmodel, d


@pytest.mark.parametrize("fname", ["r18.pth", "r18.safetensors"])
def test_files_convert_to_golden_logits(r18, fname):
  tmodel, d = r18
  variables = convert.from_torchvision(d / fname, "resnet18")
  assert variables["params"]["fc"]["kernel"].shape == (512, 7)
  check_equal("resnet18", variables, tmodel, 64, num_classes=7)


def test_wrong_arch_is_named(r18):
  _, d = r18
  with pytest.raises(convert.ConversionError, match=r"(?s)does not fit resnet34.*missing.*layer1\.2\.conv1\.weight"):
    convert.from_torchvision(d / "r18.safetensors", "resnet34")
  with pytest.raises(convert.ConversionError, match=r"mis-shaped.*layer1\.0\.conv1\.weight"):
    convert.from_torchvision(d / "r18.safetensors", "resnet50")


@pytest.mark.parametrize("fname", ["r18.pth", "r18.safetensors"])
def test_truncated_file_is_named(r18, tmp_path, fname):
  _, d = r18
  data = (d / fname).read_bytes()
  bad = tmp_path / fname
  bad.write_bytes(data[: len(data) // 2])
  with pytest.raises(convert.ConversionError, match=str(bad)):
    convert.from_torchvision(bad, "resnet18")


def test_extra_key_is_named(r18):
  tmodel, _ = r18
  sd = dict(tmodel.state_dict())
  sd["layer4.1.conv3.weight"] = torch.zeros(512, 512, 1, 1)
  with pytest.raises(convert.ConversionError, match=r"1 unexpected: layer4\.1\.conv3\.weight"):
    convert.from_torchvision(sd, "resnet18")


def test_pth_loading_refuses_pickled_objects(tmp_path):
  bad = tmp_path / "evil.pth"
  torch.save({"fc.weight": torch.zeros(2, 2), "obj": object()}, bad)  # needs full unpickling
  with pytest.raises(convert.ConversionError, match="weights_only"):
    convert.from_torchvision(bad, "resnet18")


def test_cli_writes_orbax_that_gives_torchvision_logits(r18, tmp_path):
  tmodel, d = r18
  out = tmp_path / "ckpt"
  subprocess.run([sys.executable, "-m", "jtransfer.convert", "--arch=resnet18",
                  f"--src={d / 'r18.pth'}", f"--out={out}"], check=True, capture_output=True, text=True)
  variables = weights.load(out)
  check_equal("resnet18", variables, tmodel, 64, num_classes=7)
  proc = subprocess.run([sys.executable, "-m", "jtransfer.convert", "--arch=resnet18",
                         f"--src={d / 'r18.pth'}", f"--out={out}"], capture_output=True, text=True)
  assert proc.returncode != 0 and "exists" in proc.stderr  # never overwrites


def test_merge_new_head_is_strict_except_skip(r18):
  _, d = r18
  pretrained = weights.load(d / "r18.safetensors", arch="resnet18")
  model = models.create("resnet18", num_classes=3)
  init = model.init(testing.init_key(), np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(weights.WeightsMismatchError, match=r"mis-shaped: params/fc/kernel"):
    weights.merge(init, pretrained)
  merged, report = weights.merge(init, pretrained, skip=(r"^fc/",))
  assert "params/fc/kernel" in report and "shape (512, 7) -> (512, 3)" in report
  np.testing.assert_array_equal(merged["params"]["fc"]["kernel"], init["params"]["fc"]["kernel"])
  np.testing.assert_array_equal(merged["params"]["conv1"]["kernel"], pretrained["params"]["conv1"]["kernel"])
  np.testing.assert_array_equal(merged["batch_stats"]["layer4"]["1"]["bn2"]["var"],
                                pretrained["batch_stats"]["layer4"]["1"]["bn2"]["var"])
  del pretrained["params"]["layer1"]["0"]["bn1"]["scale"]
  with pytest.raises(weights.WeightsMismatchError, match=r"missing from pretrained: params/layer1/0/bn1/scale"):
    weights.merge(init, pretrained, skip=(r"^fc/",))
