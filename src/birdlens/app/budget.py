"""Per-request budgets for explanation methods: what a web request may ask for, and how long it may run.

Why: LIME and SHAP cost one model forward per sample; an unbounded ``num_samples`` from a client would hold
the (single, serialised) model for minutes and starve every other user. Requests ask for what they like;
the server clamps it to the caps below and stops the work at ``timeout_s`` (checked before every model
forward, see :mod:`birdlens.app.service`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS: tuple[str, ...] = ("gradcam", "lime", "shap", "ig")
HEAVY_METHODS: frozenset[str] = frozenset({"lime", "shap", "ig"})

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

# method -> its budget parameter (the number of model forwards it costs)
BUDGET_PARAM: dict[str, str] = {"lime": "num_samples", "shap": "max_evals", "ig": "steps"}


@dataclass(frozen=True)
class Budget:
    """Caps and defaults for one request. ``timeout_s`` counts from when the model starts on the request."""

    lime_max_samples: int = 2000
    shap_max_evals: int = 2000
    ig_max_steps: int = 128
    timeout_s: float = 120.0
    defaults: dict[str, int] = field(default_factory=lambda: {"lime": 500, "shap": 500, "ig": 32})

    def cap(self, method: str) -> int | None:
        return {"lime": self.lime_max_samples, "shap": self.shap_max_evals, "ig": self.ig_max_steps}.get(
            method
        )

    def clamp(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The parameters the server will really use, and a note for every value it changed."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        out = dict(params)
        notes: list[str] = []
        for k, v in out.items():
            if k in RESERVED_PARAMS:
                raise ValueError(f"parameter {k!r} is set by the server and cannot be changed per request")
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise ValueError(
                    f"parameter {k!r} must be a number, string or boolean, got {type(v).__name__}"
                )
        key = BUDGET_PARAM.get(method)
        if key is None:
            return out, notes
        cap = self.cap(method)
        assert cap is not None
        value = out.get(key, self.defaults.get(method, cap))
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be an integer, got {value!r}") from None
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
        if value > cap:
            notes.append(f"{key} {value} capped to {cap} (server budget)")
            value = cap
        out[key] = value
        return out, notes

    def expected_forwards(self, method: str, params: dict[str, Any]) -> int | None:
        """Roughly how many images the method pushes through the model: the denominator of progress."""
        key = BUDGET_PARAM.get(method)
        return None if key is None else int(params.get(key, 0)) or None
