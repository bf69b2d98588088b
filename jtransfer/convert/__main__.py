"""python -m jtransfer.convert --arch resnet50 --src FILE.pth|FILE.safetensors --out DIR

Writes an Orbax weights dir (with ``model.json``) that ``weights.load`` and ``model.init`` read.
"""

from __future__ import annotations

from absl import app, flags
import jax

from jtransfer import models, weights
from jtransfer.convert.pytorch import from_torchvision


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  options = {"small_stem": True} if FLAGS.small_stem else {}
  src = weights.resolve(FLAGS.src)
  variables = from_torchvision(src, FLAGS.arch, **options)
  head = variables["params"].get("fc", {}).get("kernel")
  num_classes = None if head is None else int(head.shape[-1])
  spec = models.get_spec(FLAGS.arch)
  meta = {"arch": FLAGS.arch, "num_classes": num_classes,
          "options": spec.check_options(options), "class_names": [], "source": src}
  out = weights.save(variables, FLAGS.out, metadata=meta)
  n = sum(v.size for v in jax.tree.leaves(variables["params"]))
  print(f"wrote {out}: {FLAGS.arch}, {n:,} params, head {num_classes} classes")


def cli():
  """The command line; flags are defined here, not at import, so importing this module is free."""
  flags.DEFINE_enum("arch", None, list(models.ARCHS), "Architecture of the source weights.")
  flags.DEFINE_string("src", None, "A PyTorch state dict: .pth (weights_only) or .safetensors, or "
                      "pkg:NAME for weights shipped in an installed package.")
  flags.DEFINE_string("out", None, "Output directory (Orbax checkpoint); must not exist.")
  flags.DEFINE_bool("small_stem", False, "ResNet: the source model uses the 3x3 small-image stem.")
  flags.mark_flags_as_required(["arch", "src", "out"])
  app.run(main)


if __name__ == "__main__":
  cli()
