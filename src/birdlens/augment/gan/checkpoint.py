"""GAN checkpoints: one safetensors file (all tensors + JSON metadata in its header), written atomically.

Why one file: a resumable GAN state is G, D, the EMA generator, two Adam states and the RNG state; if they
lived in separate files a crash between two writes would pair weights of different iterations. safetensors
stores only tensors (loading never runs code) and a ``str -> str`` header, where the JSON metadata (config,
iteration, optimiser hyper-parameters, loss history) goes. A readable ``checkpoint.json`` is written next to
it for people; the loader never needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from birdlens.utils.atomic import write_bytes


def flatten_optimizer(
    opt: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as flat tensors (``prefix.state.<i>.<name>``) plus JSON-able extras."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.state.{i}.{k}"] = v.detach().cpu().clone().contiguous()
            else:
                scalars[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    head = prefix + ".state."
    for key, v in tensors.items():
        if key.startswith(head):
            i, name = key[len(head) :].split(".", 1)
            state.setdefault(int(i), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def module_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    head = prefix + "."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def save_checkpoint(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``tensors`` + ``meta`` atomically (and a human-readable JSON sidecar)."""
    path = Path(path)
    data = st_save(tensors, metadata={"birdlens": json.dumps(meta)})
    write_bytes(path, data)
    sidecar = {k: v for k, v in meta.items() if k != "history"}
    write_bytes(path.with_suffix(".json"), (json.dumps(sidecar, indent=2) + "\n").encode())
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safe_open(os.fspath(path), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    return tensors, json.loads(header.get("birdlens", "{}"))


def load_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata alone (the safetensors header): no tensor is read, so asking a big checkpoint its
    iteration costs nothing."""
    with safe_open(os.fspath(path), framework="pt") as f:
        header = f.metadata() or {}
    return json.loads(header.get("birdlens", "{}"))
