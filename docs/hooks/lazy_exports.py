"""Griffe extension: show a package's lazily exported names in the API reference.

birdlens packages export their public names through ``lazy_exports(__name__, {name: module})`` so that
``birdlens --help`` does not import torch; static analysis cannot see those names, so this extension reads
the mapping from the package's source and adds each name as an alias of the object in its module. It also
turns the docstrings' Sphinx roles (``:func:`~a.b```) into code spans, which Markdown would print verbatim.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")


def _plain_roles(text: str) -> str:
    """``:func:`~a.b``` -> ``b`` in backticks, ``:mod:`a.b``` -> ``a.b`` (Sphinx's display rule)."""
    return ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)


def _lazy_mapping(tree: ast.Module) -> dict[str, str]:
    """The ``{name: module}`` dict literal that the module passes to ``lazy_exports``."""
    dicts: dict[str, dict[str, str]] = {}
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            pairs = zip(node.value.keys, node.value.values, strict=True)
            mapping = {
                k.value: v.value
                for k, v in pairs
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant) and isinstance(k.value, str)
            }
            for target in node.targets:
                if isinstance(target, ast.Name):
                    dicts[target.id] = mapping
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            used.update(arg.id for arg in node.args if isinstance(arg, ast.Name))
    return {name: module for key in used & dicts.keys() for name, module in dicts[key].items()}


def _modules(mod: griffe.Module) -> list[griffe.Module]:
    """``mod`` and every module below it."""
    found = [mod]
    for sub in mod.modules.values():
        if not sub.is_alias:
            found.extend(_modules(sub))
    return found


class LazyExports(griffe.Extension):
    """Add ``lazy_exports`` names as aliases and exports of their package.

    A package that lists names in a static ``__all__`` and imports them in its own ``__getattr__`` (as
    ``birdlens.app`` does, to keep fastapi optional) gets each missing name from the submodule defining it.
    """

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for mod in _modules(pkg):
            for export in mod.exports or ():
                name = str(export)
                if name in mod.members:
                    continue
                for sub in mod.modules.values():
                    if not sub.is_alias and name in sub.members and not sub.members[name].is_alias:
                        mod.set_member(name, griffe.Alias(name, f"{sub.path}.{name}", parent=mod))
                        break

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _plain_roles(obj.docstring.value)

    def on_module_members(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        if mod.filepath is None or isinstance(mod.filepath, list):
            return
        mapping = _lazy_mapping(ast.parse(mod.filepath.read_text(encoding="utf-8")))
        if not mapping:
            return
        for name, module in sorted(mapping.items()):
            mod.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=mod))
        mod.exports = sorted(mapping)
