"""The study config (YAML), validated up front so a typo fails in a second, not after an hour of training.

Every section is a pydantic model with ``extra="forbid"``: an unknown key is an error that names it.
:func:`load_study_config` turns pydantic's errors into one line per problem: field path, the value given, and
what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from birdlens.train.config import TrainConfig

AUGMENT_PRESETS = ("none", "light", "keras-paper", "randaugment", "trivialaugment")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthConfig(_Strict):
    classes: int = Field(8, ge=2, le=64)
    per_class: int = Field(60, ge=5)
    size: int = Field(160, ge=32, le=1024)


class DataConfig(_Strict):
    source: Literal["synth", "path"] = "synth"
    path: str | None = Field(None, description="folder, CSV or CUB root when source=path")
    synth: SynthConfig = SynthConfig()
    top: int | None = Field(None, ge=1, description="keep the N classes with most images")
    per_class: int | None = Field(None, ge=1, description="at most K images per class (seeded)")
    min_per_class: int = Field(3, ge=1)
    image_size: int = Field(224, ge=32, le=1024, description="size of the prepared copy")
    dedupe: bool = False

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.source == "path" and not self.path:
            raise ValueError("data.source is 'path' but data.path is empty: give the dataset folder or CSV")
        return self


class AugmentConfig(_Strict):
    examples: list[str] = Field(default_factory=lambda: ["keras-paper", "light", "randaugment"])

    @field_validator("examples")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in AUGMENT_PRESETS]
        if bad:
            raise ValueError(f"unknown preset(s) {bad}; allowed: {', '.join(AUGMENT_PRESETS)}")
        return v


class GanCompareConfig(_Strict):
    """The same linear probe fitted on real / +classic / +GAN / both, one fit per seed of the augmentations."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=2)
    classic_copies: int = Field(1, ge=1, description="classically augmented copies of each real image")
    per_class: int | None = Field(
        None, ge=1, description="GAN images per class; default: the largest real class"
    )
    feature_size: int = Field(224, ge=32, le=512, description="Lite0 input size of the probe's features")


class GanConfig(_Strict):
    enabled: bool = False
    generator: str | None = Field(
        None,
        description="sample this generator ('birdlens gan export'; 'demo' = the one shipped for the demo's "
        "synthetic birds) instead of training one; it must have been trained on the study's data",
    )
    compare: GanCompareConfig | None = None
    arch: Literal["cgan", "dcgan"] = "cgan"
    image_size: int = Field(64, ge=16, le=256)
    iterations: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=2)
    per_class: int = Field(16, ge=1, description="samples per class shown / written")


class ModelEntry(_Strict):
    name: str = Field(..., description="label of this entry: run folder and report name")
    model: str = Field(..., description="registry name: simple_cnn, efficientnet_lite0, vgg19, xception, ...")
    mode: Literal["probe", "finetune", "scratch"] = "finetune"
    augment: str = "none"
    epochs: int = Field(5, ge=1)
    image_size: int | None = Field(None, ge=32, le=1024)
    batch_size: int = Field(16, ge=1)
    lr: float | None = Field(None, gt=0)
    weights: str | None = None
    use_gan: bool = False
    options: dict[str, Any] = Field(default_factory=dict, description="passed through to the trainer")

    def train_config(self, data: str, out: str, seed: int, quiet: bool) -> TrainConfig:
        """This entry as the trainer's own config: one translation (the study's ``scratch`` mode is a
        fine-tune without pretrained weights), ``options`` passed through and validated by the trainer."""
        from birdlens.train.config import TrainConfig

        fields: dict[str, Any] = {
            "data": data,
            "out": out,
            "model": self.model,
            "mode": "probe" if self.mode == "probe" else "finetune",
            "pretrained": self.mode != "scratch",
            "augment": self.augment,
            "epochs": self.epochs,
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weights": self.weights,
            "seed": seed,
            "quiet": quiet,
        }
        return TrainConfig(**{**fields, **self.options})  # an option given overrides the entry's field

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '_', '-' or '.' (it becomes a folder name)")
        return v

    @field_validator("augment")
    @classmethod
    def _preset(cls, v: str) -> str:
        if v not in AUGMENT_PRESETS:
            raise ValueError(f"unknown preset {v!r}; allowed: {', '.join(AUGMENT_PRESETS)}")
        return v


def _check_methods(v: list[str]) -> list[str]:
    # the registered explainers are the allowed names: a method added in one file is accepted here too
    from birdlens.explain.base import list_methods

    allowed = list_methods()
    bad = [m for m in v if m not in allowed]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; allowed: {', '.join(allowed)}")
    return v


def _check_method_params(v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # each method's parameters against the ranges its class declares (the web API checks the same ones)
    from birdlens.explain.base import validate_params

    _check_methods(list(v))
    return {m: validate_params(m, p) for m, p in v.items()}


class ExplainConfig(_Strict):
    models: list[str] | None = Field(None, description="model entry names to explain; default: all")
    methods: list[str] = Field(default_factory=lambda: ["gradcam", "lime", "shap", "ig"])
    n_images: int = Field(4, ge=1)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-method parameters")
    layer: str | None = Field(None, description="layer for the CAM methods; default: the model's")
    visualise: list[str | int] = Field(
        default_factory=list,
        description="classes (names or indices) whose class activation maximisation the report shows "
        "beside a few of their training images",
    )
    visualise_steps: int = Field(
        256, ge=1, le=10000, description="gradient-ascent steps per visualised class"
    )

    _m = field_validator("methods")(classmethod(lambda cls, v: _check_methods(v)))
    _p = field_validator("params")(classmethod(lambda cls, v: _check_method_params(v)))


def _check_eval_params(v: dict[str, Any]) -> dict[str, Any]:
    # the evaluation settings by name, and the selected metrics built with their options (names, budgets >= 1,
    # noise >= 0): the same checks explain-eval runs, here before any stage
    from dataclasses import fields

    from birdlens.explain.metrics.evaluate import EvalSettings
    from birdlens.explain.metrics.selection import DEFAULT_METRICS, build_selected

    if "method_params" in v:  # the stage passes its own (with the study's precision): one home for them
        raise ValueError("set the methods' options in explain_eval.method_params, not in explain_eval.params")
    allowed = [f.name for f in fields(EvalSettings) if f.name != "method_params"]
    bad = [k for k in v if k not in allowed]
    if bad:
        raise ValueError(f"unknown setting(s) {bad}; allowed: {', '.join(allowed)}")
    metrics = v.get("metrics", DEFAULT_METRICS)
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        raise ValueError(f"metrics must be a list of metric names, got {metrics!r}")
    build_selected(list(metrics), v.get("metric_params") or {})
    n = v.get("metrics_n", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"metrics_n must be an integer >= 0, got {n!r}")
    return v


class ExplainEvalConfig(_Strict):
    enabled: bool = True
    models: list[str] | None = None
    methods: list[str] = Field(default_factory=lambda: ["gradcam", "lime", "shap", "ig"])
    n: int = Field(16, ge=2)
    params: dict[str, Any] = Field(
        default_factory=dict, description="metric settings (steps, sanity, metrics, metric_params, ...)"
    )
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    layer: str | None = Field(None, description="layer for the CAM methods; default: the model's")
    class_evidence_n: int = Field(
        2, ge=0, description="test birds per class for the class-level evidence (synthetic data; 0: off)"
    )

    _m = field_validator("methods")(classmethod(lambda cls, v: _check_methods(v)))
    _p = field_validator("method_params")(classmethod(lambda cls, v: _check_method_params(v)))
    _e = field_validator("params")(classmethod(lambda cls, v: _check_eval_params(v)))


class CasesConfig(_Strict):
    """The report's cases: most-confused pairs as plain vs contrastive Grad-CAM, top losses with their nearest
    training images, and each class's prototype (medoid) in the model's feature space."""

    enabled: bool = True
    models: list[str] | None = Field(None, description="model entry names; default: all")
    pairs: int = Field(3, ge=0, le=20, description="most-confused (true, predicted) pairs shown")
    losses: int = Field(3, ge=0, le=16, description="highest-loss test images shown with their neighbours")
    k: int = Field(5, ge=1, le=20, description="nearest training images shown per class")


class ShortcutAuditConfig(_Strict):
    """The shortcut audit stage (``birdlens audit``, :mod:`birdlens.explain.audit`); off unless enabled."""

    enabled: bool = False
    models: list[str] | None = Field(None, description="model entry names to audit; default: all")
    method: str = "hirescam"
    per_class: int = Field(48, ge=6, description="train images explained per class")
    recipients: int = Field(200, ge=1, description="other-class test images each suspect is pasted onto")
    threshold: float = Field(
        0.02, ge=0, le=1, description="flagged iff the flip rate's 95% lower bound is above"
    )
    alpha: float = Field(
        0.05,
        gt=0,
        le=1,
        description="an off-object suspect that is no mark must also beat the control (paired sign test)",
    )

    _m = field_validator("method")(classmethod(lambda cls, v: _check_methods([v])[0]))


class StudyConfig(_Strict):
    name: str = "study"
    seed: int = 0
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    gan: GanConfig = GanConfig()
    models: list[ModelEntry] = Field(..., min_length=1)
    evaluate_split: Literal["valid", "test"] = "test"
    explain: ExplainConfig = ExplainConfig()
    explain_eval: ExplainEvalConfig = ExplainEvalConfig()
    cases: CasesConfig = CasesConfig()
    audit: ShortcutAuditConfig = ShortcutAuditConfig()
    device: str = Field(
        "auto", description="where evaluate/explain/explain_eval run: auto | cpu | cuda[:N] | mps"
    )
    precision: str = Field(
        "fp32", description="autocast of perturbation methods and metrics: fp32 | bf16 | fp16"
    )

    # checked on this machine when the config is read: a missing GPU fails before any stage runs
    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from birdlens.utils.device import resolve_device

        resolve_device(v)
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str, info: ValidationInfo) -> str:
        from birdlens.utils.device import resolve_device, resolve_precision

        if "device" not in info.data:  # the device was refused: that error is the one to read
            return v
        return resolve_precision(v, resolve_device(info.data["device"]))

    @model_validator(mode="after")
    def _references(self) -> StudyConfig:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model names must be unique; repeated: {dup}")
        for section in ("explain", "explain_eval", "cases", "audit"):
            wanted = getattr(self, section).models or []
            unknown = [n for n in wanted if n not in names]
            if unknown:
                raise ValueError(f"{section}.models names {unknown}, but the models are {names}")
        if any(m.use_gan for m in self.models) and not self.gan.enabled:
            raise ValueError("a model has use_gan: true but gan.enabled is false")
        if self.explain_eval.enabled:
            _check_metric_ground_truth(self.explain_eval.params.get("metrics", ()), self.data)
        return self


def _check_metric_ground_truth(metrics: Any, data: DataConfig) -> None:
    """A named metric whose ground truth the configured data cannot have (part masks off synthetic birds,
    object regions from a CSV without mask or box columns) fails here rather than after training."""
    import csv

    from birdlens.explain.metrics.selection import check_needs

    have = {"explain_fn", "explain_seeded"}
    if data.source == "synth":
        have |= {"regions", "part_masks", "part_importance", "key_parts", "parts", "background_images"}
        have |= {"pair_images", "pair_masks", "pair_targets"}
    else:
        p = Path(data.path or "")
        header: list[str] = []
        if p.is_file() and p.suffix.lower() == ".csv":
            with open(p, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
        # a folder may hold a manifest or a CUB bounding_boxes.txt: only a CSV without them is certain
        if not p.is_file() or "mask" in header or {"x", "y", "w", "h"} <= set(header):
            have.add("regions")
    check_needs(list(metrics), have)


class ConfigError(ValueError):
    """Config problems, one line each: ``field.path: got VALUE — what is allowed``."""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} problem(s) in the study config:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            lines.append(f"  - {loc}: required field is missing")
        elif e["type"] == "extra_forbidden":
            lines.append(
                f"  - {loc}: unknown field (check the spelling; see src/birdlens/configs/demo.yaml for the fields)"
            )
        else:
            lines.append(f"  - {loc}: got {e.get('input')!r} — {msg}")
    return "\n".join(lines)


def parse_study_config(data: dict[str, Any], source: str = "config") -> StudyConfig:
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_study_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read YAML, apply dotted ``overrides`` (``{"data.path": "..."}``), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (name, data, models, ...)")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_study_config(data, str(path))
