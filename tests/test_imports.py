"""Structure checks of ``src/birdlens``: no import of another package's private (``_name``) names.

The package layers themselves are checked by import-linter (``lint-imports``, configured in pyproject.toml).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _area(module: str) -> str:
    """``birdlens.explain.metrics.cli`` -> ``birdlens.explain``: the package a private name may not leave."""
    return ".".join(module.split(".")[:2])


def private_imports(source: str, module: str) -> list[str]:
    """Imports in ``module`` of a ``_name`` (or from a ``_module``) that belongs to another area of birdlens."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [(a.name, "") for a in node.names]
        else:
            continue
        for mod, name in targets:
            path = f"{mod}.{name}" if name else mod
            parts = path.split(".")
            private = any(p.startswith("_") and not p.startswith("__") for p in parts)
            if parts[0] == "birdlens" and private and _area(mod) != _area(module):
                found.append(f"{module}:{node.lineno} imports {path}")
    return found


def test_the_checker_finds_a_cross_package_private_import() -> None:
    src = "from birdlens.train.api import _in_memory_best\nfrom birdlens.evaluate.run import evaluate_run\n"
    assert private_imports(src, "birdlens.evaluate.cli") == [
        "birdlens.evaluate.cli:1 imports birdlens.train.api._in_memory_best"
    ]
    assert private_imports("import birdlens.data._x\n", "birdlens.app.cli") == [
        "birdlens.app.cli:1 imports birdlens.data._x"
    ]
    assert private_imports("from birdlens.train.api import _static_meta\n", "birdlens.train.cli") == []


def test_no_module_imports_another_packages_private_names() -> None:
    found = []
    for path in sorted((SRC / "birdlens").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found += private_imports(path.read_text(encoding="utf-8"), module)
    assert found == []


_EACH_ALONE = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "birdlens" or m.startswith("birdlens.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
"""


def test_every_module_imports_first() -> None:
    """Each module imports in an interpreter where no birdlens module is loaded yet (a module cycle that only
    bites when a module is imported first, e.g. batching -> methods -> ig -> batching, shows up here)."""
    import subprocess
    import sys

    modules = []
    for path in sorted((SRC / "birdlens").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    out = subprocess.run(
        [sys.executable, "-c", _EACH_ALONE, *modules],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "PYTHONPATH": str(SRC)},
    )
    assert out.stdout.strip() == ""
