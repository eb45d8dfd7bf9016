"""The local web page and JSON API (``birdlens serve``): upload a bird photo, see the top species and why.

Flow: :mod:`uploads` (size limit, bytes -> RGB by the data layer's rule) -> :mod:`service` (preprocess,
queue on the single model worker of :mod:`tasks`, top-k + Grad-CAM / LIME / SHAP within the :mod:`budget`)
-> :mod:`render` (overlays, map stats) -> :mod:`server` (FastAPI routes, ``static/`` page).
Needs the ``serve`` extra (fastapi, uvicorn, python-multipart).

    birdlens serve --run runs/birds-lite0            # http://127.0.0.1:8000/
    curl -F image=@bird.jpg http://127.0.0.1:8000/api/predict
    curl -F image=@bird.jpg -F method=shap -F 'params={"max_evals": 300}' http://127.0.0.1:8000/api/explain

Errors: 400 (not a usable image, bad method options; ``detail`` says why), 413 (upload over the limit),
422 (missing form field), 503 (queue full), 504 (an explanation ran past its time budget).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelService", "create_app", "create_app_from_run"]


def __getattr__(name: str) -> Any:  # lazy: importing birdlens.app must not require fastapi
    if name in ("create_app", "create_app_from_run"):
        from birdlens.app import server

        return getattr(server, name)
    if name == "ModelService":
        from birdlens.app.service import ModelService

        return ModelService
    raise AttributeError(name)
