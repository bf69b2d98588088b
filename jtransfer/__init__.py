"""jtransfer: transfer learning of image models in JAX/Flax, with numbers you can trust.

    from jtransfer import models, optim, train
    from jtransfer.configs import finetune_digits
    config = finetune_digits.get_config("runlocal")
    config.freezing = optim.get_freezing_config("last_stages", k=1)
    result = train.train_and_evaluate(config, "workdirs/run")   # same call again = resume

Submodules (imported on first use, so `import jtransfer` stays cheap): ``models`` (families,
specs, ``model.json``), ``convert`` (PyTorch ↔ Flax), ``weights`` (strict load/merge/save),
``workdir`` (what a workdir guarantees), ``data``, ``optim`` (freezing as data), ``tasks``
(supervised, distillation, DANN), ``train`` (the one trainer), ``benchmark``, ``predict``,
``export``, ``configs``, ``cpu`` (what makes it fast on a CPU). The layout:
docs/architecture.md.
"""

import importlib

__all__ = ["benchmark", "configs", "convert", "cpu", "data", "export", "models", "optim",
           "predict", "tasks", "train", "weights", "workdir"]


def __getattr__(name):
  if name in __all__:
    return importlib.import_module(f"jtransfer.{name}")
  raise AttributeError(f"module 'jtransfer' has no attribute {name!r}")
