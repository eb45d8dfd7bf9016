"""The one shape every explanation method has: ``make_explainer(...).explain(images, target) -> Explanation``.

Modelled on Captum's ``attribute(inputs, target)`` and TorchCAM's extractor objects, reduced to what the rest of
birdlens needs: a dense map per image at input resolution (higher = more evidence for the target), the class
explained, the scores behind it, and enough ``params`` to reproduce the call. Methods register themselves with
:func:`register`; :func:`make_explainer` builds one by name and refuses methods that would be silently wrong.

What a method *is* lives on its class, as Captum's attribution classes carry ``multiplies_by_inputs``: its
title and panel position, whether it is stochastic, signed, needs a CAM layer, is heavy, which parameter is its
budget, and every per-request parameter with its type and range (:class:`Param`). The CLI, the study config,
the report, the web app and the explanation-quality table read these facts, so a new method is one new file.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from birdlens.explain.outputs import OutputSelector, select_output
from birdlens.explain.targets import RUNNER_UP, runner_up

__all__ = [
    "Explainer",
    "Explanation",
    "InvalidParameterError",
    "Param",
    "UnsupportedMethodError",
    "class_score",
    "explainer_for",
    "list_methods",
    "make_explainer",
    "method_class",
    "panel_methods",
    "refuse_smooth_activations",
    "register",
    "relu_only_message",
    "unregister",
    "validate_params",
    "with_precision",
]


@dataclass
class Explanation:
    """What every method returns for a batch of ``B`` images.

    ``maps``: float32 ``[B, H, W]`` at input resolution, higher = more evidence for ``target``;
    ``target``: int64 ``[B]`` (the predicted class unless one was asked for);
    ``scores``: the target's ``logit``/``prob`` ``[B]`` plus method extras (LIME ``weights``/``segments``,
    IG ``completeness_error``, SHAP ``base_value``...), and for a contrastive explanation the ``contrast``
    class ``[B]``, its ``contrast_logit`` and the ``logit_difference`` explained; ``params``: everything
    needed to reproduce the call (the chosen layer, seed, budget, ``contrast``); ``seconds``: wall time.
    """

    maps: torch.Tensor
    target: torch.Tensor
    scores: dict[str, Any]
    method: str
    params: dict[str, Any]
    seconds: float

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def numpy(self) -> Any:
        """The maps as a float32 numpy array ``[B, H, W]``."""
        return self.maps.detach().cpu().numpy()

    def select(self, i: int) -> Explanation:
        """Image ``i`` as an explanation of a batch of one (per-image entries of ``scores`` sliced; the wall
        time shared evenly), the shape a caller that explained images one by one had."""
        n = len(self)

        def pick(v: Any) -> Any:
            if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == n:
                return v[i : i + 1]
            if isinstance(v, list) and len(v) == n:
                return [v[i]]
            return v

        params = self.params
        if isinstance(params.get("contrast"), list) and len(params["contrast"]) == n:
            params = {**params, "contrast": params["contrast"][i]}
        return Explanation(
            maps=self.maps[i : i + 1],
            target=self.target[i : i + 1],
            scores={k: pick(v) for k, v in self.scores.items()},
            method=self.method,
            params=params,
            seconds=self.seconds / max(1, n),
        )


def class_score(
    logits: torch.Tensor, target: torch.Tensor, contrast: torch.Tensor | None = None
) -> torch.Tensor:
    """The scalar each row is explained by: ``logit[target]``, or ``logit[target] - logit[contrast]`` for a
    contrastive explanation ("why target and not contrast"), the one definition every method uses.

    The difference of logits, for softmax and sigmoid heads alike: for a softmax it is exactly
    ``log(p[target] / p[contrast])``, unaffected by the other classes, and unlike a difference of
    probabilities it does not saturate where one of the two is near 0 or 1."""
    score = logits.gather(1, target.view(-1, 1).to(logits.device)).squeeze(1)
    if contrast is None:
        return score
    return score - logits.gather(1, contrast.view(-1, 1).to(logits.device)).squeeze(1)


def scores_of(
    explainer: Explainer,
    logits: torch.Tensor,
    target: torch.Tensor,
    contrast: torch.Tensor | None,
    score: str,
) -> torch.Tensor:
    """Each row's score, float64 ``[N]`` on the CPU: the target's probability (``score="prob"``, the model's
    own head) or logit, or, with a contrast, the logit difference (:func:`class_score`):
    a probability is unchanged by what the contrast class does, so it cannot say "and not B"."""
    if contrast is None and score == "prob":
        return class_score(explainer.probabilities(logits), target).double().cpu()
    return class_score(logits, target, contrast).double().cpu()


class UnsupportedMethodError(ValueError):
    """The method is refused because it would give silently wrong maps (or is unknown)."""


class InvalidParameterError(ValueError):
    """A method parameter is unknown, of the wrong type or outside its documented range (a user mistake: the
    web app answers it with 400, the CLI with one error line)."""


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a method: its type, allowed range or choices, default and meaning.

    Declared on the explainer class so that one declaration gives the web API its validation, the budget its
    caps, and the CLI/study their checks. ``lo``/``hi`` bound numbers (inclusive); ``choices`` bound strings:
    a tuple, or a function giving it where the choices are themselves class facts known only once every method
    is registered (SmoothGrad's bases).
    """

    name: str
    type: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    doc: str = ""
    optional: bool = False  # None is allowed too (it means the method's automatic choice)

    def choice_list(self) -> tuple[str, ...] | None:
        """The allowed strings (``choices`` resolved), or None where any value of the type is allowed."""
        return self.choices() if callable(self.choices) else self.choices

    def allowed(self, hi: float | None = None) -> str:
        """The allowed values in words, e.g. ``an integer in [1, 20000]``."""
        choices = self.choice_list()
        if choices is not None:
            return "one of " + ", ".join(repr(c) for c in choices)
        kind = {
            int: "an integer",
            float: "a number",
            bool: "true or false",
            str: "a string",
            dict: "a mapping of options",
        }[self.type]
        top = self.hi if hi is None else hi
        if self.lo is not None and top is not None:
            return f"{kind} in [{_num(self.lo)}, {_num(top)}]"
        if self.lo is not None:
            return f"{kind} >= {_num(self.lo)}"
        return kind

    def check(self, method: str, value: Any, hi: float | None = None) -> Any:
        """``value`` converted to the declared type, or :class:`InvalidParameterError` naming what is allowed.

        ``hi``: a tighter upper bound than the declared one (a server's budget), named in the message.
        """
        top = self.hi if hi is None else min(hi, self.hi) if self.hi is not None else hi
        bad = InvalidParameterError(f"{method}: {self.name} must be {self.allowed(top)}, got {value!r}")
        if value is None and self.optional:
            return None
        if self.type is dict:
            if not isinstance(value, dict):
                raise bad
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.type is str:
            choices = self.choice_list()
            if not isinstance(value, str) or (choices is not None and value not in choices):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.type is int:
            if float(value) != int(value):
                raise bad
            value = int(value)
        else:
            value = float(value)
        if self.lo is not None and value < self.lo:
            raise InvalidParameterError(
                f"{method}: {self.name} must be >= {_num(self.lo)} ({self.allowed(top)}), got {value!r}"
            )
        if top is not None and value > top:
            raise InvalidParameterError(
                f"{method}: {self.name} must be <= {_num(top)} ({self.allowed(top)}), got {value!r}"
            )
        return value

    def describe(self) -> dict[str, Any]:
        """The declaration as JSON-able data (for API descriptions and docs)."""
        return {
            "type": self.type.__name__,
            "default": self.default,
            "min": self.lo,
            "max": self.hi,
            "choices": None if (choices := self.choice_list()) is None else list(choices),
            "optional": self.optional,
            "doc": self.doc,
        }


#: the seed every stochastic method takes (numpy's RandomState accepts up to 2**32 - 1)
SEED = Param("seed", int, 0, lo=0, hi=2**32 - 1, doc="seed of the method's sampling")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


_REGISTRY: dict[str, type[Explainer]] = {}
_ALIASES: dict[str, str] = {}

# Modified-backward-rule methods are defined for piecewise-linear (ReLU) networks; on SiLU/Swish networks
# (EfficientNet, the default backbone) their rules do not hold and the maps look plausible but are wrong.
#: the activations on which a ReLU-only rule is wrong (LRP refuses a model holding one of them)
SMOOTH_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.SiLU,
    nn.GELU,
    nn.Mish,
    nn.Hardswish,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Tanh,
)


def relu_only_message(name: str, found: str | None = None) -> str:
    """The one refusal of a ReLU-only method: by name (``found`` None) or on a model with ``found``; the
    alternatives it names are the registered methods that accept any model (their class facts)."""
    where = (
        f"'{name}' is not offered"
        if found is None
        else f"'{name}' is refused on this model (it has a {found} activation)"
    )
    return (
        f"{where}: its modified backward rule is defined for ReLU networks; on networks with "
        "SiLU/Swish activations (EfficientNet, birdlens' default backbone) it would silently produce wrong "
        "attributions, and birdlens has no SiLU-correct implementation. Use one of: "
        f"{', '.join(any_model_methods())}."
    )


def any_model_methods() -> list[str]:
    """Registered methods, but baselines, whose class accepts every model (no :meth:`Explainer.check_model`
    of its own), in panel order."""
    _load_methods()
    base = Explainer.check_model.__func__  # type: ignore[attr-defined]
    ok = [c for c in _REGISTRY.values() if c.in_app and c.check_model.__func__ is base]  # type: ignore[attr-defined]
    return [c.name for c in sorted(ok, key=lambda c: (c.panel_order, c.name))]


#: names of ReLU-only methods birdlens does not implement: each gets :func:`relu_only_message`
_REFUSED: frozenset[str] = frozenset(
    {
        "guided_backprop",
        "guided-backprop",
        "guidedbackprop",
        "guided_gradcam",
        "guided-gradcam",
        "deconvolution",
        "deeplift",
        "deeplift_shap",
        "deepliftshap",
        "deep_shap",
        "deepshap",
        "excitation_backprop",
    }
)


def refuse_smooth_activations(name: str, model: nn.Module) -> None:
    """:class:`UnsupportedMethodError` (the message above) when ``model`` holds a non-ReLU activation module."""
    for module in model.modules():
        if isinstance(module, SMOOTH_ACTIVATIONS):
            raise UnsupportedMethodError(relu_only_message(name, type(module).__name__))


def register(name: str, *aliases: str) -> Callable[[type[Explainer]], type[Explainer]]:
    """Class decorator: make an :class:`Explainer` subclass available under ``name`` (and aliases)."""

    def deco(cls: type[Explainer]) -> type[Explainer]:
        cls.name = name
        _REGISTRY[name] = cls
        for alias in aliases:
            _ALIASES[alias] = name
        return cls

    return deco


def unregister(name: str) -> None:
    """Undo :func:`register` (the method and its aliases); for tests and plugins that add a method for a while."""
    _REGISTRY.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name]:
        del _ALIASES[alias]


def method_class(method: str) -> type[Explainer]:
    """The class registered under ``method`` (or one of its aliases), or :class:`UnsupportedMethodError`."""
    _load_methods()
    return _REGISTRY[_canonical(method)]


def panel_methods(methods: Sequence[str] | None = None) -> list[str]:
    """``methods`` (default: every registered one) in panel order, the order figures and lists show them."""
    _load_methods()
    names = list_methods() if methods is None else list(methods)
    return sorted(names, key=lambda m: (method_class(m).panel_order, m))


def with_precision(
    method_params: dict[str, dict[str, Any]], methods: Sequence[str], precision: str
) -> dict[str, dict[str, Any]]:
    """``method_params`` with ``precision`` for each of ``methods`` that declares a ``precision`` parameter
    (what ``--precision`` means for the explainers); a precision set per method wins, fp32 adds nothing."""
    out = {k: dict(v) for k, v in method_params.items()}
    if precision == "fp32":
        return out
    for m in methods:
        cls = method_class(m)
        if "precision" in cls.param_spec():
            out.setdefault(m, {}).setdefault("precision", precision)
    return out


def validate_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked against the method's declared :class:`Param` s (types converted), else
    :class:`InvalidParameterError` naming the parameter and what is allowed."""
    cls = method_class(method)
    spec = cls.param_spec()
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in spec:
            allowed = ", ".join(sorted(spec)) or "none"
            raise InvalidParameterError(
                f"{cls.name}: unknown parameter {key!r}; allowed parameters: {allowed}"
            )
        out[key] = spec[key].check(cls.name, value)
    return out


def _canonical(method: str) -> str:
    key = method.strip().lower()
    if key in _REFUSED:
        raise UnsupportedMethodError(relu_only_message(key))
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnsupportedMethodError(f"unknown explanation method {method!r}; choose one of {list_methods()}")
    return key


def check_contrastive(methods: Sequence[str]) -> None:
    """Refuse a contrast for methods that cannot explain "why A and not B" (their class says ``contrastive``),
    naming them and the methods that can (:class:`UnsupportedMethodError`)."""
    refused = [m for m in methods if not method_class(m).contrastive]
    if refused:
        can = ", ".join(m for m in list_methods() if method_class(m).contrastive)
        raise UnsupportedMethodError(
            f"{', '.join(refused)} cannot explain 'why A and not B' (contrast); use a method that can: {can}"
        )


def list_methods() -> list[str]:
    """Names accepted by :func:`make_explainer` (aliases not included)."""
    _load_methods()
    return sorted(_REGISTRY)


def make_explainer(method: str, model: nn.Module, **params: Any) -> Explainer:
    """Build the explainer ``method`` for ``model``; ``params`` are the method's keyword options.

    Common options: ``output`` (index, key or callable picking the logits from a tuple/dict output),
    ``channels_last`` (default True: converts the model in place, the largest free CPU speed-up),
    ``mean``/``std`` or ``data_config`` (needed to undo the normalisation where a method works in pixel space),
    ``multi_label`` (a sigmoid head: a label's probability is the sigmoid of its own logit, never a softmax).
    """
    _load_methods()
    cls = _REGISTRY[_canonical(method)]
    if "seed" in params and "seed" not in inspect.signature(cls.__init__).parameters:
        params.pop("seed")  # deterministic methods: a seed changes nothing, so callers may pass one to all
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    if dev.type not in cls.supports_device:
        raise UnsupportedMethodError(
            f"{cls.name} cannot run on {dev.type}; it runs on {', '.join(cls.supports_device)} "
            "(choose another --device)"
        )
    return cls(model, **params)


def explainer_for(
    trained: Any,
    method: str,
    *,
    model: nn.Module | None = None,
    seed: int | None = None,
    check: bool = True,
    **overrides: Any,
) -> Explainer:
    """Build ``method`` for a trained run: the one place explainer arguments are put together.

    ``trained``: the loaded run (:class:`birdlens.runs.TrainedModel`: model, data_config,
    model_name, cam_layer). The run's normalisation and model name always go in; its CAM layer to methods
    that need a layer; ``seed`` to stochastic methods. ``overrides`` are the method's parameters, validated
    against its declared :class:`Param` s when ``check`` (user input); ``model`` replaces the run's model (a
    watched or randomised copy). Explicit library use with non-declared options goes through
    :func:`make_explainer`.
    """
    cls = method_class(method)
    dc = trained.data_config
    kwargs: dict[str, Any] = {
        "data_config": {"mean": list(dc.mean), "std": list(dc.std)},
        "model_name": getattr(trained, "model_name", None),
    }
    if cls.needs_layer and getattr(trained, "cam_layer", None):
        kwargs["layer"] = trained.cam_layer
    if cls.stochastic and seed is not None:
        kwargs["seed"] = seed
    if getattr(trained, "multi_label", False):
        kwargs["multi_label"] = True
    kwargs.update(validate_params(cls.name, overrides) if check else overrides)
    return cls(trained.model if model is None else model, **kwargs)


def _load_methods() -> None:
    # importing the package registers every method (kept lazy so ``base`` has no import cycle)
    import birdlens.explain.methods  # noqa: F401


class Explainer(ABC):
    """Base class: resolves targets, times the call and fills ``params``; subclasses implement :meth:`_explain`."""

    name: ClassVar[str] = "base"
    #: shown in panels, tables and the web page (default: the name)
    title: ClassVar[str] = ""
    #: position in panels and method lists (lower first; ties by name)
    panel_order: ClassVar[int] = 100
    #: takes a ``seed`` and gives different maps for different seeds (the stability metric applies)
    stochastic: ClassVar[bool] = False
    #: the map is signed (evidence for and against): diverging colours centred on zero
    signed: ClassVar[bool] = False
    #: explains at a layer: gets the run's CAM layer
    needs_layer: ClassVar[bool] = False
    #: the parameter that counts model forwards (the web server caps it to its budget), if any
    budget_param: ClassVar[str | None] = None
    #: the parameter naming another registered method this one calls once per budget unit (its options in
    #: ``<name>_params``), if any: one unit then costs what one call of that method costs
    base_param: ClassVar[str | None] = None
    #: many model forwards per image: the web app runs it under its time budget
    heavy: ClassVar[bool] = False
    #: offered by the web app
    in_app: ClassVar[bool] = True
    #: per-pixel maps too speckled to read: the overlay smooths them with this Gaussian sigma (px)
    overlay_sigma: ClassVar[float] = 0.0
    #: the tunable parameters a user (CLI, study config, web request) may set, with types and ranges
    tunable: ClassVar[tuple[Param, ...]] = ()
    #: the device types (``torch.device.type``) it runs on; a model elsewhere is refused by make_explainer
    supports_device: ClassVar[tuple[str, ...]] = ("cpu", "cuda", "mps")
    #: fills its model batches from the perturbations of several images (cross-image batching,
    #: :mod:`birdlens.explain.batching`) with each image's map equal to explaining it alone, so callers
    #: (``explain``, the study, xmetrics) pass it many images per call
    batched: ClassVar[bool] = False
    #: computed from the target's gradient at the input or at a layer: SmoothGrad can average it over noisy
    #: copies (the mean of ``scores[smoothed_score]``, shown by :meth:`map_of`)
    uses_gradients: ClassVar[bool] = False
    #: the entry of ``scores`` a gradient method's map is made from, what SmoothGrad averages
    smoothed_score: ClassVar[str] = "attributions"
    #: explains "why A and not B" (scores rows by :func:`class_score` with the call's contrast); a method that
    #: cannot (its relevance is not a function of one scalar score) refuses ``contrast`` rather than ignore it
    contrastive: ClassVar[bool] = True

    @classmethod
    def param_spec(cls) -> dict[str, Param]:
        """The declared tunable parameters by name."""
        return {p.name: p for p in cls.tunable}

    @classmethod
    def check_model(cls, model: nn.Module) -> None:
        """Raise :class:`UnsupportedMethodError` where the method would give silently wrong maps on ``model``
        (LRP's rules on SiLU or uncovered skip connections); a class fact, so the web app can offer only the
        methods its served model accepts. Most methods accept any model."""
        return None

    @classmethod
    def display_title(cls) -> str:
        return cls.title or cls.name

    @classmethod
    def checked(cls, name: str, value: Any) -> Any:
        """``value`` of the declared parameter ``name`` checked against its range, so that library calls
        (not only validated user input) get the one clear error naming the option and what is allowed."""
        return cls.param_spec()[name].check(cls.name, value)

    def __init__(
        self,
        model: nn.Module,
        *,
        output: OutputSelector = None,
        channels_last: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        data_config: Any = None,
        model_name: str | None = None,
        fold_bn: bool = True,
        multi_label: bool = False,
    ) -> None:
        self.model = model.eval()
        self.multi_label = multi_label
        self.fold_bn = fold_bn
        self._fast: nn.Module | None = None
        self.output = output
        self.channels_last = channels_last
        self.model_name = model_name
        if channels_last:
            # in place: converting the weights once beats converting them on every call
            self.model.to(memory_format=torch.channels_last)
        self._mean, self._std = _resolve_normalisation(model, mean, std, data_config)
        try:
            self.device = next(model.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")
        self.params: dict[str, Any] = {"output": _describe_output(output), "channels_last": channels_last}
        # the contrast class per image during a contrastive call (so an explainer serves one call at a time,
        # as the web app's single model worker and the CLI use it)
        self.contrast: torch.Tensor | None = None
        if multi_label:  # recorded only when set: single-label params stay as they were
            self.params["multi_label"] = True

    def map_of(self, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The ``[B, H, W]`` map this method shows for its ``scores[smoothed_score]`` values (``size``: the
        input's), so SmoothGrad shows a mean of them as the method shows one explanation."""
        raise NotImplementedError(f"{self.name} is not computed from gradients (uses_gradients is False)")

    # ---- helpers shared by the methods ---------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The selected model output (logits) for a prepared batch."""
        return select_output(self.model(x), self.output)

    def fast_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for no-grad perturbation batches, from a BatchNorm-folded copy of the model when
        ``fold_bn`` (faster on CPU, measured: docs/benchmarks.md#models-and-weights; the copy is verified against
        the model, else not used)."""
        if not self.fold_bn:
            return self.logits(x)
        return select_output(self.inference_model(x)(x), self.output)

    def inference_model(self, x: torch.Tensor) -> nn.Module:
        """The module :meth:`fast_logits` runs: the BatchNorm-folded copy (built and verified on ``x`` at the
        first call) when ``fold_bn``, else the model itself."""
        if not self.fold_bn:
            return self.model
        if self._fast is None:
            from birdlens.models.fold import fold_batchnorm

            with torch.autocast(device_type=x.device.type, enabled=False):  # verify in fp32, not bf16
                result = fold_batchnorm(self.model, x[:2].float())
            self._fast = result.model
            self.params["fold_bn"] = result.folded  # conv/BN pairs merged (0: the model as is)
        return self._fast

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Move to the model's device as float32 (channels_last when enabled)."""
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4:
            raise ValueError(
                f"images must be [B, 3, H, W] normalised float tensors, got shape {tuple(images.shape)}"
            )
        x = images.detach().to(self.device, torch.float32)
        return self.to_memory_format(x)

    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    @property
    def mean(self) -> torch.Tensor:
        if self._mean is None:
            raise ValueError(
                f"{self.name}: this option works in pixel space; pass mean=/std= or data_config= "
                "(the model's normalisation)"
            )
        return self._mean.to(self.device)

    @property
    def std(self) -> torch.Tensor:
        if self._std is None:
            raise ValueError(f"{self.name}: pass mean=/std= or data_config= (the model's normalisation)")
        return self._std.to(self.device)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``[B,3,H,W]`` -> pixel values in [0, 1]."""
        return (x * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)).clamp(0, 1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities from logits, as the model's head defines them (sigmoid when ``multi_label``)."""
        from birdlens.runs.trained import head_probabilities

        return head_probabilities(logits, self.multi_label)

    def target_scores(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.detach().float()
        idx = target.view(-1, 1).to(logits.device)
        out = {
            "logit": logits.gather(1, idx).squeeze(1).cpu(),
            "prob": self.probabilities(logits).gather(1, idx).squeeze(1).cpu(),
        }
        if self.contrast is not None:
            c = self.contrast.to(logits.device)
            out.update(
                contrast=c.cpu(),
                contrast_logit=logits.gather(1, c.view(-1, 1)).squeeze(1).cpu(),
                logit_difference=class_score(logits, target, c).cpu(),
            )
        return out

    def explained_score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each row's explained score (:func:`class_score`, with this call's contrast when there is one)."""
        return class_score(logits, target, self.contrast)

    def contrast_of(self, i: int) -> int | None:
        """Image ``i``'s contrast class in the current call (``None``: not contrastive)."""
        return None if self.contrast is None else int(self.contrast[i])

    # ---- the public call -------------------------------------------------------------------------------
    def explain(
        self,
        images: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        contrast: int | Sequence[int] | torch.Tensor | str | None = None,
    ) -> Explanation:
        """Explain ``images`` (``[B,3,H,W]``, normalised for the model) for ``target`` (default: predicted).

        ``contrast``: a class (index, one or one per image) or ``"runner-up"`` (each image's likeliest class
        other than the target): the map then explains "why target and not contrast", the score
        ``logit[target] - logit[contrast]`` (:func:`class_score`) for every method; a contrast equal to the
        target is refused (its score is zero everywhere)."""
        start = time.perf_counter()
        x = self.prepare(images)
        tgt = _as_target(target, x.shape[0], self.device)
        cst = None
        if contrast is not None:
            check_contrastive([self.name])
            tgt, cst = self._resolve_contrast(x, tgt, contrast)
        self.contrast = cst
        try:
            maps, tgt, scores, extra_params = self._explain(x, tgt)
        finally:
            self.contrast = None
        maps = maps.detach().float().cpu().contiguous()
        if maps.shape != (x.shape[0], x.shape[2], x.shape[3]):
            raise AssertionError(f"{self.name} produced maps of shape {tuple(maps.shape)}")
        params = {**self.params, **extra_params}
        if cst is not None:
            given = [int(c) for c in cst]
            params["contrast"] = given[0] if len(set(given)) == 1 else given
        return Explanation(
            maps=maps,
            target=tgt.detach().cpu().long(),
            scores=scores,
            method=self.name,
            params=params,
            seconds=time.perf_counter() - start,
        )

    __call__ = explain

    def _resolve_contrast(
        self, x: torch.Tensor, target: torch.Tensor | None, contrast: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets (predicted where none was given: one inference pass) and the contrast class per image."""
        if target is None or (isinstance(contrast, str) and contrast == RUNNER_UP):
            logits, target = self.predict(x, target)
        if isinstance(contrast, str):
            if contrast != RUNNER_UP:
                raise ValueError(f"contrast must be a class index or {RUNNER_UP!r}, got {contrast!r}")
            cst = runner_up(logits, target).to(self.device)
        else:
            cst = _as_target(contrast, x.shape[0], self.device)
        assert cst is not None
        same = (cst == target.to(cst.device)).nonzero().flatten().tolist()
        if same:
            raise ValueError(
                f"contrast class {int(cst[same[0]])} is the class explained in image {same[0]}: "
                "'why A and not A' has a zero score everywhere; choose another contrast"
            )
        return target, cst

    @abstractmethod
    def _explain(
        self, x: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], dict[str, Any]]:
        """Return ``(maps [B,H,W], target [B], scores, extra params)``."""

    def predict(self, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One inference pass: the logits and the target (predicted class where none was given)."""
        with torch.inference_mode():
            if self.batched:  # image by image: a batch of one rounds as when the image is explained alone
                logits = torch.cat([self.logits(x[i : i + 1]) for i in range(x.shape[0])]).float()
            else:
                logits = self.logits(x).float()
        if target is None:
            target = logits.argmax(1)
        return logits.clone(), target.clone()


def _as_target(target: Any, batch: int, device: torch.device) -> torch.Tensor | None:
    if target is None:
        return None
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch}")
    return t.to(device).clone()


def _resolve_normalisation(
    model: nn.Module,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    data_config: Any,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    # explicit > data_config (dict or birdlens DataConfig) > the model's birdlens info > timm's pretrained_cfg;
    # None when unknown (methods that need it say so)
    candidates = [data_config, getattr(getattr(model, "birdlens_info", None), "data_config", None)]
    candidates.append(getattr(model, "pretrained_cfg", None))
    for cfg in candidates:
        if mean is not None or cfg is None:
            continue
        if isinstance(cfg, dict):
            mean, std = cfg.get("mean"), cfg.get("std")
        else:
            mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
    if mean is None or std is None:
        return None, None
    return torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)


def _describe_output(output: OutputSelector) -> Any:
    if output is None or isinstance(output, (int, str)):
        return output
    return getattr(output, "__name__", repr(output))
