"""A pytest plugin that makes a crashed or hung test fail the run fast and name itself.

    pytest -n 2 -p crashguard tests        # tests/conftest.py loads it; nothing to pass by hand

What it does, in every process that runs tests (each xdist worker, or pytest itself with -n 0):
- ``faulthandler`` writes the traceback of every thread to ``<dumps>/<worker>.txt`` on a fatal
  signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL), and the node id of each test is written there
  before it starts, so the file names the test even when the dump itself is cut short;
- each test (setup, call and teardown) runs under a bound: past ``DEFAULT_BOUND_S`` seconds, or
  ``@pytest.mark.bound(seconds)``, the same dump is written and the process exits, so a hang
  becomes a crash instead of a suite that waits forever.
With xdist the controller, told that a worker went down, prints the dump's path and its last
test's traceback, and asks the other workers to stop after their current test: the run ends
within a test's time, failed, instead of finishing the other worker's queue. Run it with
``--max-worker-restart=0`` (the Makefile does): a replaced worker under ``--dist loadfile`` can hang
xdist (pytest-xdist #784, #1323) and would re-run the test that crashed.
"""

from __future__ import annotations

import faulthandler
import os
import time

import pytest

DEFAULT_BOUND_S = 600.0  # a test's setup + call + teardown; the slowest takes ~3 min here
ENV = "JTRANSFER_TEST_DUMPS"  # where the dumps go (default: under pytest's base temporary dir)
_STOP = "STOP"
_KEY = "jtransfer_dumps"


def _worker_id(config) -> str:
  return getattr(config, "workerinput", {}).get("workerid", "main")


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin's, whose base dir it uses
def pytest_configure(config):
  config.addinivalue_line("markers", "bound(seconds): this test may take up to `seconds` "
                          f"(default {DEFAULT_BOUND_S:.0f}) before it is dumped and stopped")
  if hasattr(config, "workerinput"):
    dumps = config.workerinput[_KEY]
  else:
    dumps = os.environ.get(ENV) or str(config._tmp_path_factory.getbasetemp() / "dumps")  # noqa: SLF001
  os.makedirs(dumps, exist_ok=True)
  config.stash[_dumps_key] = dumps
  config.pluginmanager.register(_Guard(config, dumps), "jtransfer_crashguard")


_dumps_key = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
  """xdist (controller): each worker writes its dump beside the others'."""
  node.workerinput[_KEY] = node.config.stash[_dumps_key]


class _Guard:
  """The per-process half: the dump file, the per-test bound, the stop request."""

  def __init__(self, config, dumps: str):
    self.config = config
    self.dumps = dumps
    self.worker = _worker_id(config)
    self.path = os.path.join(dumps, f"{self.worker}.txt")
    self.file = None
    self.crashed: list[tuple[str, str]] = []  # (worker, why), controller only

  @property
  def is_controller(self) -> bool:
    return self.config.pluginmanager.has_plugin("dsession")

  @pytest.hookimpl(trylast=True)  # after pytest's own faulthandler plugin has enabled stderr
  def pytest_sessionstart(self, session):
    self.session = session
    if self.is_controller:  # the controller runs no test: its workers write the dumps
      return
    self.file = open(self.path, "w", buffering=1)  # noqa: SIM115 (open for the session)
    faulthandler.enable(file=self.file, all_threads=True)

  def pytest_report_header(self, config):
    return f"crash and hang dumps (every thread's traceback): {self.dumps}"

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_protocol(self, item, nextitem):
    if self.file is None:
      yield
      return
    marker = item.get_closest_marker("bound")
    bound = float(marker.args[0]) if marker else DEFAULT_BOUND_S
    self.file.write(f"== {time.strftime('%H:%M:%S')} running {item.nodeid} (bound {bound:.0f} s)\n")
    faulthandler.dump_traceback_later(bound, exit=True, file=self.file)
    try:
      yield
    finally:
      faulthandler.cancel_dump_traceback_later()
    if os.path.exists(os.path.join(self.dumps, _STOP)):
      with open(os.path.join(self.dumps, _STOP)) as f:
        item.session.shouldstop = f.read().strip() or "another worker crashed"

  # --- controller (xdist) ---

  @pytest.hookimpl(optionalhook=True)
  def pytest_testnodedown(self, node, error):
    if not error:
      return
    worker = node.gateway.id
    why = f"worker {worker} went down ({error}); the other workers stop after their current test"
    self.crashed.append((worker, str(error)))
    with open(os.path.join(self.dumps, _STOP), "w") as f:
      f.write(why + "\n")
    tr = self.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
      tr.write_line(f"\n{why}; every thread's traceback: {os.path.join(self.dumps, worker + '.txt')}")

  def pytest_terminal_summary(self, terminalreporter):
    for worker, error in self.crashed:
      path = os.path.join(self.dumps, f"{worker}.txt")
      terminalreporter.write_sep("=", f"worker {worker} went down ({error}): {path}")
      terminalreporter.write_line(_last_test(path))

  def pytest_unconfigure(self, config):
    if self.file is not None:
      faulthandler.disable()
      self.file.close()
      self.file = None


def _last_test(path: str, max_lines: int = 200) -> str:
  """The dump from the last test's line on (at most ``max_lines``)."""
  try:
    with open(path, errors="replace") as f:
      lines = f.read().splitlines()
  except OSError as e:
    return f"(no dump: {e})"
  starts = [i for i, l in enumerate(lines) if l.startswith("== ")]
  tail = lines[starts[-1]:] if starts else lines
  if len(tail) > max_lines:
    tail = tail[:max_lines] + [f"... ({len(tail) - max_lines} more lines in {path})"]
  return "\n".join(tail)
