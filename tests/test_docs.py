"""The README is user documentation that stays true: its commands and flags exist, its links resolve, it tells
no story of how the work went, and every measured number lives in docs/benchmarks.md with its command."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from birdlens.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor GitHub and mkdocs' toc both give a heading (lower case, punctuation dropped, spaces to '-')."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"\s+", "-", text.strip())


def _anchors(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {_slug(line.lstrip("#")) for line in lines if re.match(r"#{1,6} ", line)}


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_is_short_user_documentation() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    setup = _code_blocks(text, "bash")[0]
    assert [line.split("#")[0].strip() for line in setup.strip().splitlines()] == ["make demo", "make test"]
    assert "src/birdlens/configs/demo.yaml" in text
    narrative = re.compile(r"\bsession \d|\bI (?:tried|chose|ran|found|stopped)\b|\bround \d", re.I)
    assert not narrative.findall(text)


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        assert path.exists(), f"{doc.name}: link to missing {target}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name}: no heading for #{anchor} in {path.name}"


def _subcommand(tokens: list[str]) -> tuple[Any, list[str]]:
    """The (click) command that ``birdlens ARGS`` runs, and the arguments left for it."""
    command = typer.main.get_command(app)
    rest = tokens[1:]
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    return command, rest


def test_every_command_and_flag_in_the_readme_exists() -> None:
    lines = [
        line.split(" #")[0].strip()
        for block in _code_blocks(README.read_text(encoding="utf-8"), "bash")
        for line in block.splitlines()
    ]
    commands = [shlex.split(line) for line in lines if line.startswith("birdlens ")]
    assert len(commands) >= 20
    for tokens in commands:
        command, rest = _subcommand(tokens)
        assert not hasattr(command, "commands"), f"{' '.join(tokens)}: names no command"
        opts = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for flag in (t.split("=")[0] for t in rest if t.startswith("-")):
            assert flag in opts, f"{' '.join(tokens[:3])}: no option {flag}"


def test_benchmark_tables_say_what_command_result_machine() -> None:
    lines = BENCHMARKS.read_text(encoding="utf-8").splitlines()
    headers = [line for line in lines if re.match(r"\| what \|", line)]
    assert len(headers) >= 10
    for header in headers:
        cells = [c.strip() for c in header.strip("|").split("|")]
        assert cells[:2] == ["what", "command"] and cells[2].startswith("result") and cells[3] == "machine"


def _hook() -> Any:
    """The docs site's griffe extension (needs the ``docs`` extra, which ``make lint`` installs)."""
    pytest.importorskip("griffe")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "lazy_exports_hook", ROOT / "docs" / "hooks" / "lazy_exports.py"
    )
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_docs_extension_prints_sphinx_roles_as_code() -> None:
    text = "see :func:`~birdlens.train.api.train` and :mod:`birdlens.data` (``x``)"
    assert _hook()._plain_roles(text) == "see `train` and `birdlens.data` (``x``)"


def test_lazy_exports_extension_sees_every_lazily_exported_name() -> None:
    """The API reference's griffe extension reads the same names that the packages export at run time."""
    hook = _hook()
    packages = [
        p for p in (ROOT / "src" / "birdlens").rglob("__init__.py") if "lazy_exports(" in p.read_text()
    ]
    assert len(packages) >= 5
    for init in packages:
        tree = ast.parse(init.read_text(encoding="utf-8"))
        mapping = hook._lazy_mapping(tree)
        static = {
            alias.asname or alias.name
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        name = ".".join(init.parent.relative_to(ROOT / "src").parts)
        package = __import__(name, fromlist=["__all__"])
        assert mapping, name
        assert set(package.__all__) == set(mapping) | (static & set(package.__all__)), name
