"""The seams of docs/architecture.md hold: who imports whom, no task in the trainer, short functions."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "jtransfer")


def _sources(folder):
  for dirpath, _, names in os.walk(os.path.join(PKG, folder)):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        with open(path) as f:
          yield path, f.read()


def _imports(text):
  out = set()
  for node in ast.walk(ast.parse(text)):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      out.add(node.module)
      out |= {f"{node.module}.{a.name}" for a in node.names}
  return out


def test_models_import_no_task_trainer_or_optimizer():
  for path, text in _sources("models"):
    bad = {m for m in _imports(text)
           if re.match(r"jtransfer\.(methods|train|optim|benchmark)\b", m)}
    assert not bad, f"{path} imports {sorted(bad)}"


@pytest.mark.parametrize("folder,banned", [
    ("train", r"jtransfer\.(methods|benchmark)\b"),      # the trainer is below every method
    ("methods", r"jtransfer\.benchmark\b"),              # methods are below the benchmark
    ("cpu", r"jtransfer\.(?!cpu\b)"),                      # the CPU room stands alone
])
def test_folder_dependencies_point_one_way(folder, banned):
  for path, text in _sources(folder):
    bad = {m for m in _imports(text) if re.match(banned, m)}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_only_the_run_dir_names_a_run_s_files():
  """config.json, result.json, metrics.jsonl, checkpoints/ and export/ are spelled in
  workdir/rundir.py only; everyone else asks ``RunDir`` (docstrings may name them)."""
  names = {"config.json", "result.json", "metrics.jsonl", "checkpoints"}
  for path, text in _sources(""):
    if path.endswith(os.path.join("workdir", "rundir.py")):
      continue
    used = names & set(_code_strings(text))
    # identity.py records where an old workdir's identity came from ("from": "config.json");
    # atomic.py knows the pre-symlink export layout it migrates; the trainer's barrier name.
    allowed = {"identity.py": {"config.json"}}
    used -= allowed.get(os.path.basename(path), set())
    if re.search(r"path\.join\([^)]*\"export\"\)", text):
      used.add("export")
    assert not used, f"{path} spells {sorted(used)}: use workdir.RunDir"


def test_trainer_names_no_task():
  with open(os.path.join(PKG, "train", "trainer.py")) as f:
    text = f.read()
  assert not re.search(r"dann|domain", text, re.IGNORECASE)


def _code_strings(text):
  """String constants of a module that are not docstrings (examples in prose are fine)."""
  tree = ast.parse(text)
  docs = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docs.add(id(body[0].value))
  return [n.value for n in ast.walk(tree)
          if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_optim_holds_no_layer_names():
  for path, text in _sources("optim"):
    names = [s for s in _code_strings(text) if re.search(r"layer[1-4]|conv1|bn1|\^fc/", s)]
    assert not names, f"{path}: {names}"


@pytest.mark.parametrize("folder", ["train"])
def test_no_long_functions(folder):
  for path, text in _sources(folder):
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        assert length <= 60, f"{path}:{node.lineno} {node.name} has {length} lines"


def test_architecture_doc_paths_exist():
  with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
    text = f.read()
  paths = set(re.findall(r"`((?:jtransfer|configs|tests|scripts|docs)/[\w/.<>]*?)`", text))
  assert paths, "no paths found"
  for p in paths:
    if "<" in p:
      continue
    assert os.path.exists(os.path.join(ROOT, p.rstrip("/"))), p


def _module_name(path):
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _module_graph():
  """``{module: {modules it imports}}`` over jtransfer, every import (in functions too): ``from
  pkg import sub`` depends on the submodule, ``from pkg import name`` on the package."""
  sources = dict(_sources(""))
  modules = {_module_name(p) for p in sources}
  graph = {}
  for path, text in sources.items():
    deps = set()
    for node in ast.walk(ast.parse(text)):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                 else node.module for a in node.names]
      deps |= {n for n in names if n in modules}
    graph[_module_name(path)] = deps - {_module_name(path)}
  return graph


def test_no_import_circle():
  graph = _module_graph()
  assert len(graph) > 50, sorted(graph)  # the walk found the package
  done, on_path, path = set(), set(), []

  def visit(m):
    on_path.add(m)
    path.append(m)
    for d in sorted(graph.get(m, ())):
      if d in on_path:
        raise AssertionError("import circle: " + " -> ".join(path[path.index(d):] + [d]))
      if d not in done:
        visit(d)
    on_path.discard(m)
    path.pop()
    done.add(m)

  for m in sorted(graph):
    if m not in done:
      visit(m)


def test_no_benchmark_module_over_300_lines():
  for path, text in _sources("benchmark"):
    assert len(text.splitlines()) <= 300, f"{path} has {len(text.splitlines())} lines"
