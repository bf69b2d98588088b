"""Weights out of JAX: a run's variables as a torchvision-named ``.safetensors`` file, and back.

    from jtransfer import export
    export.to_safetensors(variables, "model.safetensors", arch="resnet18")
    variables = convert.from_torchvision("model.safetensors", "resnet18")   # back

    # in PyTorch (keys are torchvision's, so ``load_state_dict`` is strict):
    #   from safetensors.torch import load_file
    #   torchvision.models.resnet18(num_classes=10).load_state_dict(load_file("model.safetensors"))

Command line: ``python -m jtransfer.export --weights=WORKDIR_OR_WEIGHTS_DIR --out=model.safetensors``.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Mapping

from absl import app, flags

from jtransfer import models, weights
from jtransfer import workdir as wd
from jtransfer.convert.pytorch import to_torchvision


def to_safetensors(variables: Mapping[str, Any], path: str | os.PathLike, *, arch: str,
                   metadata: Mapping[str, Any] | None = None) -> str:
  """Writes ``variables`` of ``arch`` with the reference framework's key names (torchvision's
  for ResNets); atomic (temp file + rename)."""
  from safetensors.numpy import save_file
  path = os.path.abspath(os.fspath(path))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=os.path.dirname(path))
  os.close(fd)
  try:
    save_file(to_torchvision(variables, arch), tmp, metadata=meta or None)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
  return path


def _weights_dir(path: str) -> str:
  """A weights dir, or a run's workdir holding one under ``export/``."""
  for candidate in (path, wd.RunDir(path).export):
    if os.path.isdir(os.path.join(candidate, "variables")):
      return candidate
  raise FileNotFoundError(f"No exported weights at {path} (expected {path}/variables or {path}/export/variables)")


def main(argv):
  del argv
  FLAGS = flags.FLAGS
  src = _weights_dir(FLAGS.weights)
  variables = weights.load(src)
  model_meta = models.read_meta(src)
  if model_meta is None:
    raise FileNotFoundError(f"{src} has no {models.MODEL_JSON}: its architecture is unknown")
  meta = {"source": src, "arch": model_meta["arch"]}
  config = wd.RunDir(FLAGS.weights).config_json
  if os.path.isfile(config):
    with open(config) as f:
      meta["config"] = f.read()
  print("wrote", to_safetensors(variables, FLAGS.out, arch=model_meta["arch"], metadata=meta))


def cli():
  """The command line; flags are defined here, not at import, so importing this module is free."""
  flags.DEFINE_string("weights", None, "A training workdir or a weights dir (Orbax).")
  flags.DEFINE_string("out", None, "Output .safetensors file.")
  flags.mark_flags_as_required(["weights", "out"])
  app.run(main)


if __name__ == "__main__":
  cli()
