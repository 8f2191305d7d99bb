"""The library's boundary: :mod:`flowvi` depends on torch, numpy and the standard library only.

Two checks: every import statement in ``src/flowvi`` (read with ``ast``, also imports inside
functions) names the standard library, torch, numpy or ``flowvi`` itself; and importing every
``flowvi`` module in a fresh interpreter loads no module of the experiments or of their
dependencies (matplotlib, tqdm, yaml) nor pyro beyond what ``import torch, numpy`` loads by itself
(torch imports tqdm when it is installed).
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import flowvi

LIBRARY = Path(flowvi.__file__).resolve().parent
ALLOWED = {"torch", "numpy", "flowvi"}
FORBIDDEN = ("flowvi_experiments", "matplotlib", "tqdm", "yaml", "pyro", "scipy", "pandas")


def library_modules() -> list[str]:
    names = []
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported_roots(path: Path) -> set[str]:
    """Top-level package of every absolute import in ``path`` (relative ones stay inside flowvi)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_library_source_imports_only_torch_numpy_and_the_standard_library():
    bad = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        foreign = {r for r in imported_roots(path) if r not in ALLOWED and r not in sys.stdlib_module_names}
        if foreign:
            bad[str(path.relative_to(LIBRARY.parent))] = sorted(foreign)
    assert not bad, f"flowvi modules import outside torch/numpy/stdlib: {bad}"


def test_importing_the_library_loads_no_experiment_code():
    modules = library_modules()
    assert "flowvi.transforms.planar" in modules and "flowvi.hamiltonian" in modules
    code = (
        "import importlib, json, sys\n"
        "import numpy, torch\n"
        "before = set(sys.modules)\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.splitlines()[-1])
    assert "flowvi.flow" in loaded
    leaked = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert not leaked, f"importing flowvi loaded {leaked}"


def test_the_boundary_check_sees_a_violation(tmp_path):
    """The source walk catches imports inside functions and ``from x import y`` forms."""
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef f():\n    from flowvi_experiments.cli import main\n    import yaml\n")
    assert imported_roots(bad) == {"torch", "flowvi_experiments", "yaml"}
