"""Every benchmark config in configs/benchmark/, with each argument it declares, validates: its
variants, teachers, grids, shot/seed subsets and declared comparisons fit together."""

import importlib
import os

import pytest

from jtransfer import configs_path
from jtransfer.benchmark import harness

CONFIGS = {"demo": ("", "quick", "full"), "digits_lite0": ("", "quick", "mnist", "resnet"),
           "fedavg_lite0": ("",), "zeroshot_lite0": ("",), "reptile_lite0": ("", "quick"),
           "dann": ("", "quick"), "cifar10_r50": ("", "quick")}


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in CONFIGS.items() for a in args])
def test_benchmark_config_validates(name, arg):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  configs_path.add_package_root(os.path.join(root, "configs", "benchmark", f"{name}.py"))
  module = importlib.import_module(f"configs.benchmark.{name}")
  config = module.get_config(arg or None)
  harness.validate(config)
  assert harness.cells(config), f"{name}:{arg} has no cell"
