"""python -m jtransfer.convert --arch resnet50 --src FILE.pth|FILE.safetensors --out DIR"""

from absl import app, flags

from jtransfer import models, weights
from jtransfer.convert.torchvision import from_torchvision

_ARCH = flags.DEFINE_enum("arch", None, list(models.ARCHS), "Architecture of the source weights.")
_SRC = flags.DEFINE_string("src", None, "torchvision/timm state dict: .pth (weights_only) or .safetensors.")
_OUT = flags.DEFINE_string("out", None, "Output directory (Orbax checkpoint); must not exist.")
_SMALL_STEM = flags.DEFINE_bool("small_stem", False, "The source model uses the 3x3 small-image stem.")
flags.mark_flags_as_required(["arch", "src", "out"])


def main(argv):
  del argv
  variables = from_torchvision(_SRC.value, _ARCH.value, small_stem=_SMALL_STEM.value)
  out = weights.save(variables, _OUT.value)
  n = sum(v.size for v in __import__("jax").tree.leaves(variables["params"]))
  head = variables["params"].get("fc", {}).get("kernel")
  print(f"wrote {out}: {_ARCH.value}, {n:,} params, head {None if head is None else head.shape[-1]} classes")


if __name__ == "__main__":
  app.run(main)
