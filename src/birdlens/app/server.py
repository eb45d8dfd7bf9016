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

# no `from __future__ import annotations`: FastAPI must see the per-app Form fields built in the routers
import asyncio
import json
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from birdlens import __version__
from birdlens.app.examples import ExampleImage
from birdlens.app.schemas import Evidence, Example, Health, ModelInfo, Neighbours, Prediction, TaskStatus
from birdlens.app.service import MAX_NEIGHBOURS, ModelService, Prepared
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

# What one value of the ``params`` JSON object may be, whatever the method: bounds on the wire format only
# (each method's own ranges are checked by the budget). Larger integers than 2**53 are not exact in JSON
# numbers anyway, and nothing a method takes needs long strings or many keys.
MAX_PARAM_INT = 2**53
MAX_PARAM_STR = 200
MAX_PARAMS = 32
PARAMS_HELP = 'params must be a JSON object of numbers, strings or booleans, e.g. {"num_samples": 300}'
OUT_OF_MEMORY = "the server ran out of memory for this request; ask for fewer samples or a smaller batch_size"

ImageField = Annotated[UploadFile, File(description="the photo (any format the data layer reads)")]


def method_field(methods: list[str]) -> Any:
    """The ``method`` form field, its enum the served methods (read from the explainer classes when the app
    is built: a method registered before ``create_app`` is offered and documented without another edit)."""
    return Annotated[
        str,
        Form(description=f"one of {', '.join(methods)}", json_schema_extra={"enum": methods}),
    ]


def target_field(
    n_classes: int, description: str = "class index to explain (default: the predicted one)"
) -> Any:
    """The ``target`` form field, its range the served model's class indices (known when the app is built)."""
    return Annotated[
        int | None,
        Form(description=description, json_schema_extra={"minimum": 0, "maximum": n_classes - 1}),
    ]


def contrast_field(n_classes: int) -> Any:
    """The ``contrast`` form field: "why the target and not this class" (a class index, like ``target``)."""
    return target_field(
        n_classes,
        "class index B: explain 'why the target and not B' (the logit difference; default: no contrast)",
    )


ParamsField = Annotated[
    str | None,
    Form(
        description='JSON object of method options, e.g. {"num_samples": 300}: numbers, strings or '
        "booleans; each method's budget parameter (the one counting model forwards) is capped (see /api/info)",
        max_length=4096,
        json_schema_extra={"contentMediaType": "application/json"},
    ),
]
IncludeMapField = Annotated[bool, Form(description="also return the raw map as nested lists")]
NeighboursField = Annotated[
    int, Form(ge=1, le=MAX_NEIGHBOURS, description="nearest training images per class (predicted, runner-up)")
]


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
    add_error_handlers(app)
    api = Requests(service, max_upload_bytes, max_pending)
    add_page(app)
    app.include_router(service_router(api))
    app.include_router(model_router(api))
    app.include_router(task_router(api))
    app.include_router(example_router(app))
    app.include_router(neighbour_router(api))
    exact_form_schemas(app)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """User mistakes the routes raise as exceptions, answered as JSON with a 4xx."""

    @app.exception_handler(BadImage)
    async def _bad_image(_: Request, exc: BadImage) -> JSONResponse:
        return JSONResponse({"detail": f"cannot use this file: {exc.reason}"}, status_code=400)

    @app.exception_handler(UploadTooLarge)
    async def _too_large(_: Request, exc: UploadTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)


class Requests:
    """What every model route does with a request: admit it, decode its photo, queue it, wait for it."""

    def __init__(self, service: ModelService, max_upload_bytes: int, max_pending: int) -> None:
        self.service = service
        self.max_upload_bytes = max_upload_bytes
        self.max_pending = max_pending

    def check_capacity(self) -> None:
        if self.service.queue.pending() >= self.max_pending:
            raise HTTPException(
                503,
                f"server busy: {self.max_pending} requests are already queued; try again shortly",
                headers={"Retry-After": "5"},
            )

    async def read_image(self, upload: UploadFile) -> Prepared:
        self.check_capacity()
        data = check_size(await upload.read(), self.max_upload_bytes)  # upload.filename is never used

        def decode() -> Prepared:
            img = decode_upload(data, draft_size=self.service.draft_size)
            return self.service.prepare(img, size=upright_size(data))

        try:
            return await run_in_threadpool(decode)
        except MemoryError:
            raise HTTPException(503, OUT_OF_MEMORY) from None

    async def wait(self, task: Task[Any]) -> Any:
        """The task's result; its failures as the status a client can act on."""
        try:
            return await asyncio.wrap_future(task.future)
        except TaskTimeout as e:
            raise HTTPException(504, str(e)) from None
        except TaskCancelled as e:
            raise HTTPException(409, f"task {e}") from None
        except ValueError as e:  # the service's and explainers' refusals of what the client asked for
            raise HTTPException(400, str(e)) from None
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and not _is_out_of_memory(e):
                raise
            raise HTTPException(503, OUT_OF_MEMORY, headers={"Retry-After": "5"}) from None

    def submit(
        self,
        prep: Prepared,
        method: str,
        params: str | None,
        target: int | None,
        include_map: bool,
        contrast: int | None = None,
    ) -> Task[Evidence]:
        try:
            return self.service.submit_explain(
                prep, method, parse_params(params), target, include_map, contrast=contrast
            )
        except ValueError as e:
            raise HTTPException(400, str(e)) from None

    def status(self, task: Task[Any]) -> TaskStatus:
        err = None if task.error is None else (str(task.error) or type(task.error).__name__)
        return TaskStatus(
            id=task.id,
            method=task.kind,
            state=task.state,  # type: ignore[arg-type]
            progress=1.0 if task.state == "done" else task.watch.progress,
            queue_position=self.service.queue.position(task),
            elapsed=round(task.elapsed, 3),
            timeout_s=task.watch.timeout_s or 0.0,
            result=task.result if task.state == "done" else None,
            error=err,
        )

    def task_or_404(self, task_id: str) -> Task[Any]:
        task = self.service.queue.get(task_id)
        if task is None:
            raise HTTPException(404, "unknown or expired task")
        return task


def _is_out_of_memory(e: RuntimeError) -> bool:
    """torch reports a failed CPU allocation as a RuntimeError, not a MemoryError."""
    text = str(e).lower()
    return "can't allocate memory" in text or "out of memory" in text


def _reject_constant(name: str) -> float:
    raise ValueError(name)


def parse_params(raw: str | None) -> dict[str, Any]:
    """The ``params`` form field -> a dict of finite numbers, short strings, booleans (400 otherwise)."""
    if not raw:
        return {}
    try:
        params = json.loads(raw, parse_constant=_reject_constant)  # NaN and Infinity are not JSON
    except (ValueError, RecursionError):
        raise HTTPException(400, PARAMS_HELP) from None
    if not isinstance(params, dict):
        raise HTTPException(400, PARAMS_HELP)
    if len(params) > MAX_PARAMS:
        raise HTTPException(400, f"params has {len(params)} keys; at most {MAX_PARAMS} are accepted")
    for key, value in params.items():
        problem = _param_problem(value)
        if problem:
            raise HTTPException(400, f"parameter {key[:MAX_PARAM_STR]!r} {problem}")
    return params


def _param_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= MAX_PARAM_INT else f"is out of range (|value| <= 2**53), got {value:.3g}"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number, got {value}"
    if isinstance(value, str):
        return None if len(value) <= MAX_PARAM_STR else f"is longer than {MAX_PARAM_STR} characters"
    return f"must be a number, string or boolean, got {type(value).__name__}"


async def only_fields(request: Request, *names: str) -> None:
    """400 naming a form field the route does not take (a typo such as ``param=`` would be ignored otherwise).

    Called in the route, after FastAPI's own validation, so a missing photo is still the usual 422.
    """
    form = await request.form()  # the form FastAPI already parsed (Starlette caches it on the request)
    unknown = sorted(set(form.keys()) - set(names))
    if unknown:
        name = unknown[0][:MAX_PARAM_STR]
        raise HTTPException(400, f"unknown form field {name!r}; this endpoint takes {', '.join(names)}")


def exact_form_schemas(app: FastAPI) -> None:
    """Declare in ``/openapi.json`` that the form bodies take no other fields, as :func:`only_fields` enforces."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for name, component in build().get("components", {}).get("schemas", {}).items():
                if name.startswith("Body_"):
                    component["additionalProperties"] = False
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def service_router(api: Requests) -> APIRouter:
    router = APIRouter(tags=["service"])
    service = api.service

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: the model is loaded; ``queue`` = tasks waiting or running."""
        return Health(
            status="ok", model=service.trained.model_name, run=service.run_name, queue=service.queue.pending()
        )

    @router.get("/api/info", response_model=ModelInfo)
    async def info() -> ModelInfo:
        """The model and run this server uses, its classes, methods and per-request budget."""
        return service.info(api.max_upload_bytes)

    return router


def model_router(api: Requests) -> APIRouter:
    router = APIRouter(tags=["model"])
    service = api.service
    method_form = method_field(service.methods)
    target_form = target_field(len(service.trained.classes))
    contrast_form = contrast_field(len(service.trained.classes))

    @router.post(
        "/api/predict",
        response_model=Prediction,
        responses={
            400: {"description": "not a usable image"},
            413: {"description": "upload too large"},
            503: {"description": "too many requests queued"},
        },
    )
    async def predict(request: Request, image: ImageField) -> Prediction:
        """Top-5 species and the Grad-CAM evidence for the most probable one."""
        await only_fields(request, "image")
        prep = await api.read_image(image)
        task = service.submit_predict(prep)
        out = await api.wait(task)
        return Prediction(
            top=out.top,
            gradcam=out.gradcam,
            view_png=out.view_png,
            width=prep.width,
            height=prep.height,
            model=service.info(api.max_upload_bytes),
            seconds=round(out.seconds, 4),
            queued_seconds=round(task.queued_seconds, 4),
        )

    @router.post(
        "/api/explain",
        response_model=Evidence,
        responses={
            400: {"description": "not a usable image or bad parameters"},
            413: {"description": "upload too large"},
            503: {"description": "too many requests queued, or not enough memory for this one"},
            504: {"description": "the method ran past the per-request time budget"},
        },
    )
    async def explain(
        request: Request,
        image: ImageField,
        method: method_form = "gradcam",
        params: ParamsField = None,
        target: target_form = None,
        include_map: IncludeMapField = False,
        contrast: contrast_form = None,
    ) -> Evidence:
        """One explanation, waited for (scripts). The page uses ``/api/tasks`` to show progress instead."""
        await only_fields(request, "image", "method", "params", "target", "include_map", "contrast")
        prep = await api.read_image(image)
        return await api.wait(api.submit(prep, method, params, target, include_map, contrast))

    return router


def task_router(api: Requests) -> APIRouter:
    router = APIRouter(tags=["model"])
    method_form = method_field(api.service.methods)
    target_form = target_field(len(api.service.trained.classes))
    contrast_form = contrast_field(len(api.service.trained.classes))

    @router.post(
        "/api/tasks",
        response_model=TaskStatus,
        status_code=202,
        responses={
            400: {"description": "not a usable image or bad parameters"},
            413: {"description": "upload too large"},
            503: {"description": "too many requests queued"},
        },
    )
    async def create_task(
        request: Request,
        image: ImageField,
        method: method_form = "lime",
        params: ParamsField = None,
        target: target_form = None,
        contrast: contrast_form = None,
    ) -> TaskStatus:
        """Queue an explanation and return at once; poll ``GET /api/tasks/{id}`` for progress and the result."""
        await only_fields(request, "image", "method", "params", "target", "contrast")
        prep = await api.read_image(image)
        return api.status(api.submit(prep, method, params, target, False, contrast))

    missing = {404: {"description": "unknown or expired task"}}

    @router.get("/api/tasks/{task_id}", response_model=TaskStatus, responses=missing)
    async def get_task(task_id: str) -> TaskStatus:
        return api.status(api.task_or_404(task_id))

    @router.delete("/api/tasks/{task_id}", response_model=TaskStatus, responses=missing)
    async def cancel_task(task_id: str) -> TaskStatus:
        """Stop a queued or running task at its next model forward (the page does this on a new photo)."""
        task = api.task_or_404(task_id)
        task.watch.cancel()
        return api.status(task)

    return router


def example_router(app: FastAPI) -> APIRouter:
    router = APIRouter(tags=["examples"])

    @router.get("/api/examples", response_model=list[Example])
    async def list_examples() -> list[Example]:
        """Photos from the run's test split to try (one per species, up to 12)."""
        return [
            Example(id=i, label=ex.label, url=f"/api/examples/{i}/image")
            for i, ex in enumerate(app.state.examples)
        ]

    @router.get(
        "/api/examples/{example_id}/image",
        responses={200: {"content": {"image/*": {}}}, 404: {"description": "no such example"}},
    )
    async def example_image(example_id: int) -> Response:
        """The example's original file bytes (chosen by index from the server's own list, never by path)."""
        exs: list[ExampleImage] = app.state.examples
        if not 0 <= example_id < len(exs):
            raise HTTPException(404, "no such example")
        return await _image_file(exs[example_id].path)

    return router


async def _image_file(path: Path) -> Response:
    """An image file's own bytes, typed by what Pillow reads in them (read off the event loop), cacheable."""
    data = await run_in_threadpool(read_image_bytes, path)
    fmt = (open_image(data).format or "octet-stream").lower()
    return Response(
        data,
        media_type=f"image/{fmt}" if fmt != "octet-stream" else "application/octet-stream",
        headers={"Cache-Control": "max-age=3600"},
    )


def neighbour_router(api: Requests) -> APIRouter:
    router = APIRouter(tags=["model"])
    service = api.service

    @router.post(
        "/api/neighbours",
        response_model=Neighbours,
        responses={
            400: {"description": "not a usable image, or the server has no training set"},
            413: {"description": "upload too large"},
            503: {"description": "too many requests queued"},
        },
    )
    async def neighbours(request: Request, image: ImageField, k: NeighboursField = 5) -> Neighbours:
        """The photo's nearest training images in the model's own feature space (penultimate layer, cosine
        distance), from the predicted class and from the runner-up; the first call builds the index."""
        await only_fields(request, "image", "k")
        prep = await api.read_image(image)
        try:
            task = service.submit_neighbours(prep, k)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return await api.wait(task)

    @router.get(
        "/api/neighbours/{row}/image",
        responses={200: {"content": {"image/*": {}}}, 404: {"description": "no such training image"}},
    )
    async def neighbour_image(row: int) -> Response:
        """A training image named in a ``/api/neighbours`` answer (by its row, never by path)."""
        path = service.training_image(row)
        if path is None:
            raise HTTPException(404, "no such training image (ask /api/neighbours first)")
        return await _image_file(path)

    return router


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
