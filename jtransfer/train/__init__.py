"""Training: state, step, losses, loop.

    from jtransfer import train
    result = train.train_and_evaluate(config, "workdirs/run")   # resumes when run again

Submodules, each usable alone: ``trainer`` (the loop and its pieces), ``state``/``step`` (the train
state and the step that differentiates only the trainable subtree), ``losses``, ``evaluate`` and
``metrics``, ``checkpointing`` (Orbax), ``parallel`` (jit over a mesh, pmap, multi-host),
``writers`` (JSON lines, TensorBoard, progress), ``inputs`` (data sources), ``config`` (the base
config) and ``fields`` (what each of its fields means for a run). ``train_and_evaluate`` is
imported on first use, so importing a light submodule (``config``, ``fields``) does not load the
trainer.
"""

__all__ = ["NonFiniteLossError", "train_and_evaluate"]


def __getattr__(name):
  if name in __all__:
    from jtransfer.train import trainer  # pylint: disable=g-import-not-at-top
    return getattr(trainer, name)
  raise AttributeError(f"module 'jtransfer.train' has no attribute {name!r}")
