"""The command line: parse flags, call ``train.trainer.train_and_evaluate``. Nothing else lives here.

    python -m jtransfer.main --config=configs/finetune_digits.py:runlocal --workdir=workdirs/digits \
        --config.optim.lr=0.01 --config.train.num_steps=500

The config is locked: ``--config.train.num_step=5`` (a typo) is an error naming the key. Running
the same command again resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jtransfer import configs_path
from jtransfer.cpu import hostmem

# Libraries whose INFO lines (per checkpoint save, per dataset read) would bury the run's own.
_CHATTY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge.py")


class _QuietLibraries(logging.Filter):
  """Drops the INFO chatter of ``_CHATTY`` libraries, and Orbax's warning for checkpoints saved
  without metrics (every save between evaluations), so progress and the run's messages show."""

  def filter(self, record: logging.LogRecord) -> bool:
    if not any(part in record.pathname for part in _CHATTY):
      return True
    return record.levelno > logging.WARNING or (
        record.levelno == logging.WARNING and "did not provide metrics" not in record.getMessage())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  hostmem.reuse_freed_memory()  # before JAX's threads start: each step's buffers are reused
  from jtransfer import methods  # pylint: disable=g-import-not-at-top  (after flag parsing)
  from jtransfer.train import trainer  # pylint: disable=g-import-not-at-top
  try:
    config = flags.FLAGS.config
    trainer.train_and_evaluate(config, flags.FLAGS.workdir, task=methods.task_for(config))
  except trainer.NonFiniteLossError as e:
    sys.exit(f"jtransfer: {e}")


def cli() -> None:
  """The command line; flags are defined here, not at import, so importing this module is free."""
  configs_path.add_from_argv(sys.argv)  # before absl loads the file: its `import configs` works
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file, configs/FILE.py[:ARG] (from any directory); "
      "override fields with --config.SECTION.KEY=VALUE.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, export and "
                      "result.json; an existing one is resumed.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  cli()
