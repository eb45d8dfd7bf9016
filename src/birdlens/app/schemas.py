"""The JSON the API returns, as pydantic models: they are the OpenAPI schema at ``/openapi.json``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

TaskState = Literal["queued", "running", "done", "error", "cancelled"]


class ModelInfo(BaseModel):
    """Which model and run answer: shown on the page so a screenshot says what produced it."""

    run: str = Field(description="run directory name")
    model: str = Field(description="model registry name")
    mode: str | None = Field(None, description="probe or finetune")
    classes: list[str]
    image_size: int
    cam_layer: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="headline metrics from meta.json")
    images: dict[str, int] = Field(default_factory=dict, description="training images per split")
    weights: str | None = Field(None, description="where the backbone's starting weights came from")
    finished: str | None = Field(None, description="when training finished (UTC, ISO 8601)")
    methods: list[str] = Field(description="explanation methods this server offers")
    refused: dict[str, str] = Field(
        default_factory=dict, description="methods the served model refuses, each with the reason"
    )
    budget: dict[str, float] = Field(
        description="per-request caps (num_samples, max_evals, steps, num_masks, timeout_s)"
    )
    params: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description="per method, the parameters a request may set: type, min, max, choices, default, doc",
    )
    max_upload_bytes: int


class Species(BaseModel):
    label: str
    index: int
    prob: float = Field(ge=0, le=1)


class MapStats(BaseModel):
    """Summary of the raw explanation map (float32, input resolution, higher = more evidence)."""

    shape: list[int]
    min: float
    max: float
    mean: float
    std: float
    positive_fraction: float = Field(description="share of pixels with a value > 0")
    top10_share: float = Field(description="share of the total positive evidence in the top 10% of pixels")


class Evidence(BaseModel):
    """One explanation of one image: the overlay to show and the numbers behind it."""

    method: str
    target: int
    target_label: str
    contrast: int | None = Field(None, description="class B of a 'why the target and not B' explanation")
    contrast_label: str | None = None
    overlay_png: str = Field(
        description="data:image/png;base64,... heatmap over the model's view of the photo"
    )
    stats: MapStats
    params: dict[str, float | int | str | bool | dict[str, float | int | str | bool | None] | None] = Field(
        description="parameters really used (after the budget; a method's options of a method it calls, "
        "such as SmoothGrad's base_params and LIME's segmentation_params, as an object)"
    )
    notes: list[str] = Field(default_factory=list, description="budget caps applied, etc.")
    seconds: float
    map: list[list[float]] | None = Field(None, description="the raw map, only when include_map=true")


class Prediction(BaseModel):
    """Answer to ``POST /api/predict``."""

    top: list[Species] = Field(description="top-5 species, most probable first")
    gradcam: Evidence
    view_png: str = Field(
        description="data:image/png;base64,... the photo as the model saw it (resized, cropped)"
    )
    width: int = Field(description="uploaded image width after EXIF orientation")
    height: int
    model: ModelInfo
    seconds: float = Field(description="time on the model (excluding queueing)")
    queued_seconds: float


class TaskStatus(BaseModel):
    """A queued or running explanation; poll ``GET /api/tasks/{id}`` until ``state`` is final."""

    id: str
    method: str
    state: TaskState
    progress: float = Field(ge=0, le=1, description="model forwards done / expected (approximate)")
    queue_position: int = Field(description="tasks ahead of this one (0 = running or next)")
    elapsed: float
    timeout_s: float
    result: Evidence | None = None
    error: str | None = None


class Example(BaseModel):
    id: int
    label: str
    url: str


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    run: str
    queue: int


class Neighbour(BaseModel):
    """One training image near the uploaded photo in the model's feature space."""

    row: int = Field(description="the image's row in the run's training-set index")
    label: str
    distance: float = Field(ge=0, description="cosine distance of the penultimate-layer features")
    url: str = Field(description="the image's bytes, GET (chosen by row, never by path)")


class NeighbourGroup(BaseModel):
    index: int = Field(description="class index")
    label: str
    neighbours: list[Neighbour]


class Neighbours(BaseModel):
    """Answer to ``POST /api/neighbours``: the nearest training images of the predicted class and of the
    runner-up (the likeliest other class), nearest first."""

    metric: str
    predicted: NeighbourGroup
    runner_up: NeighbourGroup
    seconds: float
