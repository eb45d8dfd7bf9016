"""``OWNER.OPTION=VALUE`` command-line options (``--param``, ``--metric-param``), parsed in one place for every
command that takes them, so they read values (JSON, else a string) and report mistakes the same way."""

from __future__ import annotations

import json
from typing import Any

import typer


def parse_params(
    items: list[str], option: str = "--param", owner: str = "METHOD"
) -> dict[str, dict[str, Any]]:
    """``["lime.num_samples=500", "ig.steps=32"]`` -> ``{"lime": {"num_samples": 500}, "ig": {"steps": 32}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise typer.BadParameter(f"{option} wants {owner}.OPTION=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method.strip(), {})[name.strip()] = value
    return out
