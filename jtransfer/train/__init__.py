"""Training: state, step, losses, loop.

    from jtransfer import train
    result = train.train_and_evaluate(config, "workdirs/run")   # resumes when run again

Submodules, each usable alone: ``trainer`` (the loop and its pieces), ``state``/``step`` (the train
state and the step that differentiates only the trainable subtree), ``losses``, ``evaluate`` and
``metrics``, ``checkpointing`` (Orbax), ``parallel`` (jit over a mesh, pmap, multi-host),
``writers`` (JSON lines, TensorBoard, progress), ``inputs`` (data sources), ``config``.
"""

from jtransfer.train.trainer import NonFiniteLossError, train_and_evaluate

__all__ = ["NonFiniteLossError", "train_and_evaluate"]
