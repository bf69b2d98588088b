"""Test-session setup shared by every test file."""

from jtransfer.cpu import hostmem

# A crashed or hung test fails the run fast, naming itself, with every thread's traceback in a file.
pytest_plugins = ["crashguard"]

# As the entry points do (jtransfer.main, jtransfer.benchmark): XLA's buffers reused across steps.
hostmem.reuse_freed_memory()

# torch (and triton, which torchvision pulls in) segfault when imported after TensorFlow has loaded
# its own native libraries into the process; the golden-logit tests need torch, and most other
# tests import TensorFlow through jtransfer.data. Importing torch first makes the order safe.
try:
  import torch  # noqa: F401
  import torchvision  # noqa: F401
except ImportError:  # torch is in the test extra; tests that need it skip with a reason.
  pass
