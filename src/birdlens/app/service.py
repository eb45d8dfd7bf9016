"""The model behind the page: preprocessing, top-k, and explanations, all run on the one model worker.

The web layer (:mod:`birdlens.app.server`) only parses requests and formats answers; everything that
touches the model happens here, inside tasks of a :class:`~birdlens.app.tasks.TaskQueue` (one worker
thread), so no two requests ever share the model, its hooks or its gradients at the same time.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from birdlens.app import render
from birdlens.app.budget import Budget, offered_methods, param_ranges, refused_methods
from birdlens.app.schemas import Evidence, ModelInfo, Neighbour, NeighbourGroup, Neighbours, Species
from birdlens.app.tasks import Task, TaskQueue, Watch, watching
from birdlens.explain import select_output
from birdlens.explain.base import Explainer, UnsupportedMethodError, explainer_for, method_class
from birdlens.explain.examples import FeatureIndex, features_for, index_for_run, nearest_examples
from birdlens.explain.progress import announcing
from birdlens.models import denormalize, resize_size
from birdlens.runs.trained import TrainedModel, head_probabilities, load_trained

TOP_K = 5
#: the most nearest training images a request may ask for per class
MAX_NEIGHBOURS = 10


class BadParams(ValueError):
    """The client's method options were refused by the explainer (answered with 400, not 500)."""


@dataclass
class Prepared:
    """One uploaded photo ready for the model: the normalised input and its size before preprocessing."""

    x: torch.Tensor  # [1, 3, H, W] float, normalised
    width: int
    height: int


@dataclass
class PredictOutput:
    top: list[Species]
    gradcam: Evidence
    view_png: str
    seconds: float


class ModelService:
    """Owns a :class:`TrainedModel` and the single worker that runs it."""

    def __init__(
        self, trained: TrainedModel, run_name: str, budget: Budget | None = None, run_dir: Path | None = None
    ) -> None:
        self.trained = trained
        self.run_dir = run_dir
        self.run_name = run_name
        self.budget = budget or Budget()
        self.queue = TaskQueue()
        self._transform = trained.transform()
        self.draft_size = resize_size(trained.data_config, trained.image_size)  # short side before the crop
        # built now, before the worker starts: it converts the model to channels_last in place (the
        # largest free CPU speed-up), which must not happen while a request runs
        self._gradcam = explainer_for(trained, "gradcam")
        # methods whose class refuses this model (LRP on SiLU or skip connections) are not offered, and a
        # request for one is answered with the refusal
        self.refused = refused_methods(trained.model)
        self.methods = [m for m in offered_methods() if m not in self.refused]
        self._index: FeatureIndex | None = None  # the training set's features, built on the first request

    @classmethod
    def from_run(
        cls, run_dir: str | Path, budget: Budget | None = None, which: str = "best", device: Any = "cpu"
    ) -> ModelService:
        """Load the run onto ``device`` (a ``torch.device`` or ``"cpu"``/``"cuda:N"``; ``birdlens serve --device``)."""
        run_dir = Path(run_dir)
        trained = load_trained(run_dir, which=which, device=device)  # type: ignore[arg-type]
        return cls(trained, run_name=display_name(run_dir), budget=budget, run_dir=run_dir)

    # ---- description ---------------------------------------------------------------------------------
    def info(self, max_upload_bytes: int) -> ModelInfo:
        meta = self.trained.meta
        b = self.budget
        methods = self.methods
        caps = {}
        for m in methods:
            key, cap = method_class(m).budget_param, b.cap(m)
            if key is not None and cap is not None:
                caps[f"{m}_{key}"] = float(cap)
                caps[f"{m}_default"] = float(b.default(m) or 0)
        return ModelInfo(
            run=self.run_name,
            model=self.trained.model_name,
            mode=meta.get("mode"),
            classes=list(self.trained.classes),
            image_size=self.trained.image_size,
            cam_layer=self.trained.cam_layer,
            metrics=self.headline_metrics(),
            images={k: int(v) for k, v in (meta.get("images") or {}).items() if isinstance(v, int)},
            weights=meta.get("weights") if isinstance(meta.get("weights"), str) else None,
            finished=meta.get("finished") if isinstance(meta.get("finished"), str) else None,
            methods=methods,
            refused=self.refused,
            budget={**caps, "timeout_s": b.timeout_s},
            params=param_ranges(b, methods),
            max_upload_bytes=max_upload_bytes,
        )

    def headline_metrics(self) -> dict[str, float]:
        """Validation accuracy from ``meta.json`` and test accuracy from ``metrics/test.json`` when present."""
        out: dict[str, float] = {}
        valid = self.trained.meta.get("valid")
        if isinstance(valid, dict) and isinstance(valid.get("accuracy"), (int, float)):
            out["valid_accuracy"] = float(valid["accuracy"])
        if self.run_dir is not None:
            try:
                with open(self.run_dir / "metrics" / "test.json", encoding="utf-8") as f:
                    test = json.load(f)
                if isinstance(test.get("accuracy"), (int, float)):
                    out["test_accuracy"] = float(test["accuracy"])
            except (OSError, ValueError, AttributeError):
                pass
        return out

    def label(self, index: int) -> str:
        return self.trained.classes[index]

    # ---- request side (any thread) -------------------------------------------------------------------
    def prepare(self, img: Image.Image, size: tuple[int, int] | None = None) -> Prepared:
        """Resize/crop/normalise exactly as in evaluation (thread-safe: no model involved).

        ``size``: the upload's own (width, height) when ``img`` was decoded at a reduced (draft) scale.
        """
        x = self._transform(img).unsqueeze(0).contiguous()
        w, h = size or img.size
        return Prepared(x=x, width=w, height=h)

    def check_target(self, target: int | None, what: str = "target") -> int | None:
        if target is not None and not 0 <= target < len(self.trained.classes):
            raise ValueError(
                f"{what} must be a class index in 0..{len(self.trained.classes) - 1}, got {target}"
            )
        return target

    def submit_predict(self, prep: Prepared, top_k: int = TOP_K) -> Task[PredictOutput]:
        return self.queue.submit("predict", lambda watch: self._predict(prep, top_k))

    def submit_explain(
        self,
        prep: Prepared,
        method: str,
        params: dict[str, Any],
        target: int | None,
        include_map: bool = False,
        contrast: int | None = None,
    ) -> Task[Evidence]:
        """Queue an explanation; ``params`` are clamped to the budget here so errors surface before queueing.

        ``contrast``: explain "why ``target`` and not ``contrast``" (the logit difference)."""
        method = method.strip().lower()
        if method in self.refused:
            raise UnsupportedMethodError(self.refused[method])
        used, notes = self.budget.clamp(method, params)
        self.check_target(target)
        self.check_target(contrast, "contrast")
        if contrast is not None and contrast == target:
            raise ValueError(f"contrast {contrast} is the target itself; choose another class")
        watch = Watch(total=self.budget.expected_forwards(method, used), timeout_s=self.budget.timeout_s)
        return self.queue.submit(
            method,
            lambda w: self._explain(prep, method, used, target, w, notes, include_map, contrast),
            watch,
        )

    def submit_neighbours(self, prep: Prepared, k: int = 5) -> Task[Neighbours]:
        """Queue the search for the photo's ``k`` nearest training images (predicted class and runner-up)."""
        if self.run_dir is None:
            raise ValueError("this server has no training set to compare with (it was not started on a run)")
        if isinstance(k, bool) or not 1 <= k <= MAX_NEIGHBOURS:
            raise ValueError(f"k must be an integer in 1..{MAX_NEIGHBOURS}, got {k!r}")
        return self.queue.submit("neighbours", lambda _w: self._neighbours(prep, k))

    def training_image(self, row: int) -> Path | None:
        """The file of training image ``row`` of the index (None before the index exists or out of range)."""
        index = self._index
        return Path(index.paths[row]) if index is not None and 0 <= row < len(index) else None

    # ---- worker side ---------------------------------------------------------------------------------
    def _neighbours(self, prep: Prepared, k: int) -> Neighbours:
        """Nearest training images in the model's feature space; the index is built once (run's cache)."""
        start = time.perf_counter()
        if self._index is None:
            assert self.run_dir is not None
            self._index = index_for_run(self.trained, self.run_dir, quiet=True)
        device = next(self.trained.model.parameters()).device
        with torch.inference_mode():
            logits = select_output(self.trained.model(prep.x.to(device))).float().cpu()
        found = nearest_examples(self._index, features_for(self.trained, prep.x)[0], logits[0], k)
        groups = {
            role: NeighbourGroup(
                index=self.trained.classes.index(found[role]["class"]),
                label=found[role]["class"],
                neighbours=[
                    Neighbour(
                        row=n["row"],
                        label=n["class"],
                        distance=n["distance"],
                        url=f"/api/neighbours/{n['row']}/image",
                    )
                    for n in found[role]["neighbours"]
                ],
            )
            for role in ("predicted", "runner_up")
        }
        return Neighbours(metric=found["metric"], seconds=round(time.perf_counter() - start, 4), **groups)

    def _predict(self, prep: Prepared, top_k: int) -> PredictOutput:
        """Top-k and Grad-CAM for the top class from ONE forward pass.

        Grad-CAM's own forward already computes every logit; a forward hook keeps them, so the probabilities
        cost nothing extra (the two forwards this replaced were ~80% of a request's time).
        """
        start = time.perf_counter()
        kept: list[torch.Tensor] = []
        hook = self.trained.model.register_forward_hook(
            lambda _m, _i, out: kept.append(select_output(out).detach().float())
        )
        try:
            evidence = self._explain(prep, "gradcam", {}, None, Watch(), [], False)  # target: the top class
        finally:
            hook.remove()
        probs = head_probabilities(kept[-1], self.trained.multi_label)[0]
        p, idx = probs.topk(min(top_k, probs.numel()))
        top = [
            Species(label=self.label(int(i)), index=int(i), prob=float(v))
            for v, i in zip(p, idx, strict=True)
        ]
        if top[0].index != evidence.target:  # a tie between classes: explain the one listed first
            evidence = self._explain(prep, "gradcam", {}, top[0].index, Watch(), [], False)
        view = self.view_image(prep)
        return PredictOutput(
            top=top, gradcam=evidence, view_png=render.png_data_url(view), seconds=time.perf_counter() - start
        )

    def view_image(self, prep: Prepared) -> np.ndarray:
        """The photo as the model saw it: uint8 HWC at the input size."""
        return denormalize(prep.x[0], self.trained.data_config).permute(1, 2, 0).numpy()

    def _explainer(self, method: str, params: dict[str, Any]) -> Explainer:
        if method == "gradcam" and not params:
            return self._gradcam
        try:
            return explainer_for(self.trained, method, **params)
        except (TypeError, ValueError) as e:
            raise BadParams(f"{method}: {e}") from None

    def _explain(
        self,
        prep: Prepared,
        method: str,
        params: dict[str, Any],
        target: int | None,
        watch: Watch,
        notes: list[str],
        include_map: bool,
        contrast: int | None = None,
    ) -> Evidence:
        heavy = method_class(method).heavy
        model = self.trained.model
        # a method with no budget to size the progress bar by tells its rows as it learns them
        told = announcing(watch.expect if heavy and watch.total is None else None)
        with watching(model, watch) if heavy else contextlib.nullcontext(model), told:
            explainer = self._explainer(method, params)
            try:
                result = explainer.explain(prep.x, target=target, contrast=contrast)
            except ValueError as e:
                if not heavy and contrast is None:
                    raise
                raise BadParams(f"{method}: {e}") from None  # e.g. options that do not fit this image size
        m = result.maps[0].numpy().astype(np.float32)
        tgt = int(result.target[0])
        overlay = render.overlay(self.view_image(prep), m, method, result.scores)
        used = {k: _jsonable(v) for k, v in result.params.items() if _jsonable(v) is not _SKIP}
        return Evidence(
            method=method,
            target=tgt,
            target_label=self.label(tgt),
            contrast=contrast,
            contrast_label=None if contrast is None else self.label(contrast),
            overlay_png=render.png_data_url(overlay),
            stats=render.map_stats(m),
            params=used,
            notes=notes,
            seconds=round(float(result.seconds), 4),
            map=m.tolist() if include_map else None,
        )

    def close(self) -> None:
        self.queue.shutdown()


_GENERIC_NAMES = frozenset({"run", "out", "output", "model", "models", "best", "last", "latest"})


def display_name(run_dir: Path) -> str:
    """The run's folder name, with its parent when the name alone says nothing (``.../birds-lite0/run``)."""
    p = run_dir.resolve()
    return f"{p.parent.name}/{p.name}" if p.name.lower() in _GENERIC_NAMES and p.parent.name else p.name


_SKIP = object()


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, dict):  # a composed method's base options (SmoothGrad's base_params)
        inner = {str(k): _jsonable(x) for k, x in v.items()}
        return {k: x for k, x in inner.items() if x is not _SKIP}
    return _SKIP
