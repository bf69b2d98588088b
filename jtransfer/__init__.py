"""jtransfer: transfer learning of image models in JAX/Flax, with numbers you can trust.

    from jtransfer import models, optim, train
    from configs import finetune_digits   # the experiment files: the repository's configs/
    config = finetune_digits.get_config("runlocal")
    config.freezing = optim.get_freezing_config("last_stages", k=1)
    result = train.train_and_evaluate(config, "workdirs/run")   # same call again = resume

Submodules (imported on first use, so `import jtransfer` stays cheap): ``models`` (families,
specs, ``model.json``), ``convert`` (PyTorch ↔ Flax), ``weights`` (strict load/merge/save),
``workdir`` (what a workdir guarantees), ``data``, ``optim`` (freezing as data), ``train`` (the
one trainer and its ``Task`` seam), ``methods`` (each transfer method in one place: distillation,
domain adaptation, FedAvg, Reptile, WiSE-FT, zero-shot), ``benchmark``, ``predict``,
``export``, ``cpu`` (what makes it fast on a CPU). Experiment configs are not part of the package:
they are the repository's top-level ``configs/`` (run the example above from its root; the command
lines take ``--config=configs/FILE.py`` from any directory). The layout: docs/architecture.md.
"""

import importlib

__all__ = ["benchmark", "convert", "cpu", "data", "export", "methods", "models", "optim",
           "predict", "train", "weights", "workdir"]


def __getattr__(name):
  if name in __all__:
    return importlib.import_module(f"jtransfer.{name}")
  raise AttributeError(f"module 'jtransfer' has no attribute {name!r}")
