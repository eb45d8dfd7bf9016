"""The FastAPI application: the page at ``/``, the JSON API under ``/api``, ``/healthz``, ``/openapi.json``.

Why FastAPI and a small static page rather than Gradio: FastAPI is already a birdlens extra, gives the
OpenAPI schema for free from the pydantic models in :mod:`birdlens.app.schemas`, and lets the server decide
exactly how bad input is answered (413 before the body is read, 400 with the data layer's reason) and how
requests are queued for the model. Gradio would add a large dependency tree, its own queue and upload
handling (harder to give these exact guarantees), and a UI whose layout we could not shape into
"photo | top-5 | Grad-CAM | LIME | SHAP" as directly. The page is plain HTML/CSS/JS in ``static/``, with no
CDN and no build step, so it works offline. FastAPI's own ``/docs`` page loads Swagger UI from a CDN,
so it is turned off; the schema is at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from birdlens import __version__
from birdlens.app.examples import ExampleImage
from birdlens.app.schemas import Evidence, Example, Health, ModelInfo, Prediction, TaskStatus
from birdlens.app.service import BadParams, ModelService, Prepared
from birdlens.app.tasks import Task, TaskCancelled, TaskTimeout
from birdlens.app.uploads import (
    DEFAULT_MAX_UPLOAD_BYTES,
    MULTIPART_OVERHEAD_BYTES,
    BodyLimitMiddleware,
    UploadTooLarge,
    check_size,
    decode_upload,
    upright_size,
)
from birdlens.data.images import BadImage, open_image, read_image_bytes

STATIC_DIR = Path(__file__).with_name("static")

ImageField = Annotated[UploadFile, File(description="the photo (any format the data layer reads)")]


def create_app(
    service: ModelService,
    examples: Sequence[ExampleImage] = (),
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pending: int = 64,
) -> FastAPI:
    """Build the app around a loaded :class:`ModelService` (tests pass their own; the CLI loads a run).

    ``max_pending``: model tasks allowed to wait or run at once; beyond it requests get 503 (each waiting
    task holds its image in memory, so the queue must not grow without bound).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="birdlens",
        version=__version__,
        summary="Bird species prediction with Grad-CAM / LIME / SHAP evidence.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the page must work offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        file_limit=max_upload_bytes,
    )
    app.state.service = service
    app.state.examples = list(examples)

    @app.exception_handler(BadImage)
    async def _bad_image(_: Request, exc: BadImage) -> JSONResponse:
        return JSONResponse({"detail": f"cannot use this file: {exc.reason}"}, status_code=400)

    @app.exception_handler(UploadTooLarge)
    async def _too_large(_: Request, exc: UploadTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    def check_capacity() -> None:
        if service.queue.pending() >= max_pending:
            raise HTTPException(
                503,
                f"server busy: {max_pending} requests are already queued; try again shortly",
                headers={"Retry-After": "5"},
            )

    async def read_image(upload: UploadFile) -> Prepared:
        check_capacity()
        data = check_size(await upload.read(), max_upload_bytes)  # upload.filename is never used

        def decode() -> Prepared:
            img = decode_upload(data, draft_size=service.draft_size)
            return service.prepare(img, size=upright_size(data))

        return await run_in_threadpool(decode)

    async def wait(task: Task[Any]) -> Any:
        try:
            return await asyncio.wrap_future(task.future)
        except TaskTimeout as e:
            raise HTTPException(504, str(e)) from None
        except TaskCancelled as e:
            raise HTTPException(409, f"task {e}") from None
        except BadParams as e:
            raise HTTPException(400, str(e)) from None

    def parse_params(raw: str | None) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            params = json.loads(raw)
        except ValueError:
            raise HTTPException(400, 'params must be a JSON object, e.g. {"num_samples": 300}') from None
        if not isinstance(params, dict):
            raise HTTPException(400, 'params must be a JSON object, e.g. {"num_samples": 300}')
        return params

    def submit(
        prep: Prepared, method: str, params: str | None, target: int | None, include_map: bool
    ) -> Task[Evidence]:
        try:
            return service.submit_explain(prep, method, parse_params(params), target, include_map)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    def status(task: Task[Any]) -> TaskStatus:
        err = None if task.error is None else (str(task.error) or type(task.error).__name__)
        return TaskStatus(
            id=task.id,
            method=task.kind,
            state=task.state,  # type: ignore[arg-type]
            progress=1.0 if task.state == "done" else task.watch.progress,
            queue_position=service.queue.position(task),
            elapsed=round(task.elapsed, 3),
            timeout_s=task.watch.timeout_s or 0.0,
            result=task.result if task.state == "done" else None,
            error=err,
        )

    # ---- page ------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ---- API -------------------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness: the model is loaded; ``queue`` = tasks waiting or running."""
        return Health(
            status="ok", model=service.trained.model_name, run=service.run_name, queue=service.queue.pending()
        )

    @app.get("/api/info", response_model=ModelInfo, tags=["service"])
    async def info() -> ModelInfo:
        """The model and run this server uses, its classes, methods and per-request budget."""
        return service.info(max_upload_bytes)

    @app.post(
        "/api/predict",
        response_model=Prediction,
        tags=["model"],
        responses={
            400: {"description": "not a usable image"},
            413: {"description": "upload too large"},
            503: {"description": "too many requests queued"},
        },
    )
    async def predict(image: ImageField) -> Prediction:
        """Top-5 species and the Grad-CAM evidence for the most probable one."""
        prep = await read_image(image)
        task = service.submit_predict(prep)
        out = await wait(task)
        return Prediction(
            top=out.top,
            gradcam=out.gradcam,
            view_png=out.view_png,
            width=prep.width,
            height=prep.height,
            model=service.info(max_upload_bytes),
            seconds=round(out.seconds, 4),
            queued_seconds=round(task.queued_seconds, 4),
        )

    @app.post(
        "/api/explain",
        response_model=Evidence,
        tags=["model"],
        responses={
            400: {"description": "not a usable image or bad parameters"},
            413: {"description": "upload too large"},
            504: {"description": "the method ran past the per-request time budget"},
        },
    )
    async def explain(
        image: ImageField,
        method: Annotated[str, Form(description="gradcam, lime, shap or ig")] = "gradcam",
        params: Annotated[
            str | None,
            Form(
                description='JSON object of method options, e.g. {"num_samples": 300}; '
                "num_samples (lime), max_evals (shap), steps (ig) are capped"
            ),
        ] = None,
        target: Annotated[
            int | None, Form(description="class index to explain (default: the predicted one)")
        ] = None,
        include_map: Annotated[bool, Form(description="also return the raw map as nested lists")] = False,
    ) -> Evidence:
        """One explanation, waited for (scripts). The page uses ``/api/tasks`` to show progress instead."""
        prep = await read_image(image)
        return await wait(submit(prep, method, params, target, include_map))

    @app.post(
        "/api/tasks",
        response_model=TaskStatus,
        status_code=202,
        tags=["model"],
        responses={
            400: {"description": "not a usable image or bad parameters"},
            413: {"description": "upload too large"},
        },
    )
    async def create_task(
        image: ImageField,
        method: Annotated[str, Form(description="gradcam, lime, shap or ig")] = "lime",
        params: Annotated[
            str | None, Form(description="JSON object of method options (see /api/explain)")
        ] = None,
        target: Annotated[
            int | None, Form(description="class index to explain (default: the predicted one)")
        ] = None,
    ) -> TaskStatus:
        """Queue an explanation and return at once; poll ``GET /api/tasks/{id}`` for progress and the result."""
        prep = await read_image(image)
        return status(submit(prep, method, params, target, False))

    def task_or_404(task_id: str):  # type: ignore[no-untyped-def]
        task = service.queue.get(task_id)
        if task is None:
            raise HTTPException(404, "unknown or expired task")
        return task

    @app.get(
        "/api/tasks/{task_id}",
        response_model=TaskStatus,
        tags=["model"],
        responses={404: {"description": "unknown or expired task"}},
    )
    async def get_task(task_id: str) -> TaskStatus:
        return status(task_or_404(task_id))

    @app.delete(
        "/api/tasks/{task_id}",
        response_model=TaskStatus,
        tags=["model"],
        responses={404: {"description": "unknown or expired task"}},
    )
    async def cancel_task(task_id: str) -> TaskStatus:
        """Stop a queued or running task at its next model forward (the page does this on a new photo)."""
        task = task_or_404(task_id)
        task.watch.cancel()
        return status(task)

    @app.get("/api/examples", response_model=list[Example], tags=["examples"])
    async def list_examples() -> list[Example]:
        """Photos from the run's test split to try (one per species, up to 12)."""
        return [
            Example(id=i, label=ex.label, url=f"/api/examples/{i}/image")
            for i, ex in enumerate(app.state.examples)
        ]

    @app.get(
        "/api/examples/{example_id}/image",
        tags=["examples"],
        responses={200: {"content": {"image/*": {}}}, 404: {"description": "no such example"}},
    )
    async def example_image(example_id: int) -> Response:
        """The example's original file bytes (chosen by index from the server's own list, never by path)."""
        exs: list[ExampleImage] = app.state.examples
        if not 0 <= example_id < len(exs):
            raise HTTPException(404, "no such example")
        data = await run_in_threadpool(read_image_bytes, exs[example_id].path)
        fmt = (open_image(data).format or "octet-stream").lower()
        return Response(
            data,
            media_type=f"image/{fmt}" if fmt != "octet-stream" else "application/octet-stream",
            headers={"Cache-Control": "max-age=3600"},
        )

    return app


def create_app_from_run(
    run_dir: str | Path,
    examples_dir: str | Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    **service_kw: Any,
) -> FastAPI:
    """Load ``run_dir`` and find its test-split examples: what ``birdlens serve`` runs."""
    from birdlens.app.examples import find_examples

    service = ModelService.from_run(run_dir, **service_kw)
    return create_app(service, find_examples(run_dir, examples_dir), max_upload_bytes=max_upload_bytes)
