"""python -m jtransfer.benchmark --config=configs/benchmark/FILE.py[:ARG] --workdir=DIR [--config.KEY=V]

[--compilation_cache=DIR]: JAX's persistent compilation cache (default DIR/jax_cache).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jtransfer import configs_path
from jtransfer.cpu import hostmem


def main(argv):
  del argv
  hostmem.reuse_freed_memory()  # before JAX's threads start: each step's buffers are reused
  if not flags.FLAGS.is_parsed() or flags.FLAGS["verbosity"].present == 0:
    # One progress line per run is the harness's output; library INFO logs (Orbax, TFDS) would bury
    # it. --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  import jax
  # Many short runs of the same few programs: reuse compiled executables across runs and restarts.
  # Every program is written, however quick its compile: a restart otherwise recompiles dozens of
  # small ones (49 eager broadcasts for a Lite0 init, ~2 s; BENCHMARKS.md, compile time).
  jax.config.update("jax_compilation_cache_dir",
                    flags.FLAGS.compilation_cache or os.path.join(flags.FLAGS.workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  from jtransfer.benchmark import harness
  harness.run(flags.FLAGS.config, flags.FLAGS.workdir, stream=sys.stdout)


def cli():
  """The command line; flags are defined here, not at import, so importing this module is free."""
  configs_path.add_from_argv(sys.argv)  # before absl loads the file: its `import configs` works
  config_flags.DEFINE_config_file("config", None, "Benchmark config file, "
                                  "configs/benchmark/FILE.py[:ARG] (from any directory).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Where runs, caches and results go.")
  flags.DEFINE_string("compilation_cache", "", "JAX's persistent compilation cache directory "
                      "(default WORKDIR/jax_cache); benchmarks of the same programs can share one.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)


if __name__ == "__main__":
  cli()
