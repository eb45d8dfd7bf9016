"""Per-request budgets for explanation methods: what a web request may ask for, and how long it may run.

Why: LIME and SHAP cost one model forward per sample; an unbounded ``num_samples`` from a client would hold
the (single, serialised) model for minutes and starve every other user, and an unbounded ``batch_size`` can
exhaust the server's memory in one request. What each method offers, which parameter counts its model
forwards, whether it is heavy and every parameter's type and range are declared on the explainer class
(:class:`birdlens.explain.base.Param`); this module only adds the server's own caps: a budget parameter
above its cap is clamped to it (with a note), any other value outside its declared range is refused with
:class:`~birdlens.explain.base.InvalidParameterError` naming the allowed range, and the work stops at
``timeout_s`` (checked before every model forward, see :mod:`birdlens.app.service`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from birdlens.explain.base import InvalidParameterError, UnsupportedMethodError, method_class, panel_methods

# options the server sets itself: a client must not swap the model's normalisation, layer or output
RESERVED_PARAMS: frozenset[str] = frozenset(
    {
        "model",
        "output",
        "channels_last",
        "mean",
        "std",
        "data_config",
        "model_name",
        "layer",
        "device",
    }
)


def offered_methods() -> list[str]:
    """The methods the web app offers (their class says ``in_app``), in panel order."""
    return [m for m in panel_methods() if method_class(m).in_app]


def refused_methods(model: nn.Module) -> dict[str, str]:
    """The offered methods that refuse ``model`` (their class's ``check_model``), each with its refusal: the
    server does not offer them and answers a request for one with that message."""
    out: dict[str, str] = {}
    for m in offered_methods():
        try:
            method_class(m).check_model(model)
        except UnsupportedMethodError as e:
            out[m] = str(e)
    return out


def param_ranges(
    budget: Budget | None = None, methods: list[str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every offered method's (or each of ``methods``') per-request parameters with type, range, default and
    meaning (the budget parameter's maximum is the server's cap): the ranges requests are validated against."""
    b = budget or Budget()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in offered_methods() if methods is None else methods:
        cls = method_class(m)
        out[m] = {}
        for p in cls.tunable:
            info = p.describe()
            if p.name == cls.budget_param:
                info["max"] = b.cap(m)
                info["default"] = b.default(m)
            out[m][p.name] = info
    return out


@dataclass(frozen=True)
class Budget:
    """Caps and defaults for one request. ``timeout_s`` counts from when the model starts on the request.

    ``lime_max_samples`` / ``shap_max_evals`` / ``ig_max_steps`` / ``rise_max_masks`` /
    ``smoothgrad_max_samples`` are the caps on the budget parameters of those methods (the first two set by
    ``birdlens serve --max-samples``), chosen from the measured cost of one capped request
    (docs/benchmarks.md#per-request-limits-of-the-explanation-methods-issue-26); a method without one here is
    capped at its declared maximum. ``defaults``: the budget used when a request names none (smaller than the
    library's defaults, for a responsive page). ``max_base_passes``: a method that calls a base method per
    budget unit (its class's ``base_param``: SmoothGrad) runs that base at the server's default budget for it
    (a request cannot send the base's options), and its units are capped so that units x the base's budget
    stays within this many passes (SmoothGrad over IG: 5.4 s for 50 steps a sample on Lite0, so 1000 passes
    fit the 120 s time limit).
    """

    lime_max_samples: int = 2000
    shap_max_evals: int = 2000
    ig_max_steps: int = 128
    rise_max_masks: int = 1000
    smoothgrad_max_samples: int = 100
    max_base_passes: int = 1000
    timeout_s: float = 120.0
    defaults: dict[str, int] = field(
        default_factory=lambda: {"lime": 500, "shap": 500, "ig": 32, "rise": 500, "smoothgrad": 25}
    )

    def own_caps(self) -> dict[str, int]:
        """The server's cap of each method that has one here, by method name."""
        return {
            "lime": self.lime_max_samples,
            "shap": self.shap_max_evals,
            "ig": self.ig_max_steps,
            "rise": self.rise_max_masks,
            "smoothgrad": self.smoothgrad_max_samples,
        }

    def cap(self, method: str) -> int | None:
        """The most model forwards one request of ``method`` may ask for (None: it has no budget parameter)."""
        cls = method_class(method)
        if cls.budget_param is None:
            return None
        hi = cls.param_spec()[cls.budget_param].hi
        own = self.own_caps().get(cls.name)
        caps = [int(c) for c in (own, hi) if c is not None]
        if not caps:
            raise ValueError(f"{cls.name}: its budget parameter {cls.budget_param!r} declares no maximum")
        return min(caps)

    def default(self, method: str) -> int | None:
        """The budget a request of ``method`` gets when it names none (never above the cap)."""
        cls = method_class(method)
        cap = self.cap(method)
        if cap is None or cls.budget_param is None:
            return None
        return min(int(self.defaults.get(cls.name, cls.param_spec()[cls.budget_param].default)), cap)

    def clamp(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The parameters the server will really use, and a note for every value it changed.

        Raises :class:`~birdlens.explain.base.InvalidParameterError` for an unknown method or parameter, a
        server-set one, or a value outside its declared range.
        """
        offered = offered_methods()
        if method not in offered:
            raise InvalidParameterError(f"unknown method {method!r}; choose one of {', '.join(offered)}")
        cls = method_class(method)
        spec = cls.param_spec()
        out: dict[str, Any] = {}
        notes: list[str] = []
        for k, v in params.items():
            if k in RESERVED_PARAMS:
                raise InvalidParameterError(
                    f"parameter {k!r} is set by the server and cannot be changed per request"
                )
            if k not in spec:
                raise InvalidParameterError(
                    f"{method}: unknown parameter {k!r}; allowed parameters: {', '.join(sorted(spec)) or 'none'}"
                )
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise InvalidParameterError(
                    f"parameter {k!r} must be a number, string or boolean, got {type(v).__name__}"
                )
            out[k] = spec[k].check(method, v) if k != cls.budget_param else v
        key = cls.budget_param
        if key is None:
            return out, notes
        cap = self.cap(method)
        assert cap is not None
        base_cost = 1
        if cls.base_param is not None:
            base = str(out.get(cls.base_param, spec[cls.base_param].default))
            base_budget = self.default(base)
            if base_budget is not None:  # the base has a budget of its own: fix it, and pay for it
                out[f"{cls.base_param}_params"] = {method_class(base).budget_param: base_budget}
                base_cost = base_budget
                if self.max_base_passes // base_cost < cap:
                    cap = max(1, self.max_base_passes // base_cost)
        value = out.get(key, self.default(method))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
            each = f"; {base_cost} passes of the base each" if base_cost > 1 else ""
            notes.append(f"{key} {value} capped to {cap} (server budget{each})")
            value = cap
        out[key] = spec[key].check(method, value, hi=cap)
        return out, notes

    def expected_forwards(self, method: str, params: dict[str, Any]) -> int | None:
        """Roughly how many images the method pushes through the model: the denominator of progress (a
        composed method's units times its base's budget)."""
        cls = method_class(method)
        key = cls.budget_param
        if key is None:
            return None
        units = int(params.get(key, 0))
        if cls.base_param is not None:
            base = params.get(cls.base_param, cls.param_spec()[cls.base_param].default)
            base_key = method_class(str(base)).budget_param
            units *= int((params.get(f"{cls.base_param}_params") or {}).get(base_key, 1)) if base_key else 1
        return units or None
