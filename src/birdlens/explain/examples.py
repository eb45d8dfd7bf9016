"""Example-based explanations: the training images nearest to an explained one in the model's own feature space.

The space is the pooled penultimate features (:func:`birdlens.models.features`): what the linear head reads and
what a probe is fitted on, so "near" means "near for this model", not for some other network. The distance is
the cosine distance ``1 - cos(a, b)``: the pooled features' norm follows the image's contrast and exposure
more than its content, and the head's logits rank classes by the features' direction up to that scale, so two
photos of a species taken in different light stay neighbours (``metric="euclidean"`` is there too).

The search is brute force in torch, in float64 (the training sets here are thousands of images: one matrix
product; exact, so it equals any other exact search). The training set's vectors are the run's *index*:
computed once through the run's feature cache (a probe's cached features are reused, nothing recomputed) and
kept in ``RUN_DIR/examples/index.npz`` (:data:`birdlens.runs.layout.EXAMPLES_INDEX`), written atomically and
keyed by the backbone weights, the images' contents and labels and the transform: a retrained model or changed
data gets a new key, and the file is rebuilt instead of read.

API for other modules (the shortcut audit reuses it): :func:`features_for` ``(trained, images) -> [N, D]`` and
:class:`FeatureIndex` with :meth:`FeatureIndex.nearest` ``(feats, k, classes=None)``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdlens.runs import layout
from birdlens.utils.atomic import atomic_path

__all__ = ["METRICS", "FeatureIndex", "Neighbours", "features_for", "index_for_run"]

#: distances offered; the first is the default (why cosine: module doc)
METRICS = ("cosine", "euclidean")
FORMAT = "v1"


def features_for(trained: Any, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Pooled penultimate features ``[N, D]`` (float32, on the CPU) of normalised images ``[N, 3, H, W]``,
    on the model's device, in batches of ``batch_size``."""
    from birdlens.models import features as pooled_features

    model = trained.model.eval()
    device = next(model.parameters()).device
    if images.ndim == 3:
        images = images[None]
    out = []
    with torch.inference_mode():
        for s in range(0, images.shape[0], max(1, batch_size)):
            out.append(pooled_features(model, images[s : s + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest rows of an index for each of ``Q`` queries, nearest first (ties: the lower row)."""

    rows: torch.Tensor  # int64 [Q, k]
    distances: torch.Tensor  # float64 [Q, k]


@dataclass
class FeatureIndex:
    """Feature vectors of a set of labelled images (a run's training set) and exact nearest-neighbour search."""

    features: torch.Tensor  # float32 [N, D]
    labels: torch.Tensor  # int64 [N], indices into ``classes``
    paths: list[str]
    classes: list[str]
    metric: str = "cosine"
    key: str = ""
    _ref: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not (self.features.shape[0] == self.labels.shape[0] == len(self.paths)):
            raise ValueError("features, labels and paths must have one entry per image")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def _reference(self) -> torch.Tensor:
        """The indexed vectors in float64, unit length for the cosine distance: computed once per index, so a
        query costs one matrix product (docs/benchmarks.md, "Nearest training examples")."""
        if getattr(self, "_ref", None) is None:
            ref = self.features.to(torch.float64)
            if self.metric == "cosine":
                ref = ref / ref.norm(dim=1, keepdim=True).clamp_min(1e-12)
            self._ref = ref
        return self._ref

    def distances(self, feats: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Distances ``[Q, N]`` (float64) from each query to each indexed image (or to ``rows`` of them)."""
        ref = self._reference() if rows is None else self._reference()[rows]
        q = feats.detach().to(torch.float64).cpu()
        if q.ndim == 1:
            q = q[None]
        if q.shape[1] != ref.shape[1]:
            raise ValueError(f"queries have {q.shape[1]} features, the index {ref.shape[1]}: another model?")
        if self.metric == "euclidean":
            return torch.cdist(q, ref)
        qn = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (1 - qn @ ref.T).clamp_min(0)

    def nearest(self, feats: torch.Tensor, k: int, classes: Sequence[int] | None = None) -> Neighbours:
        """The ``k`` nearest indexed images to each query ``[Q, D]``, only among ``classes`` when given (fewer
        than ``k`` when those classes have fewer images)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        rows = torch.arange(len(self))
        chosen = None  # all rows: no copy of the reference matrix
        if classes is not None:
            rows = chosen = rows[torch.isin(self.labels, torch.as_tensor(list(classes), dtype=torch.long))]
        d = self.distances(feats, chosen)
        order = torch.sort(d, dim=1, stable=True).indices[:, :k]  # stable: ties keep the lower row first
        return Neighbours(rows=rows[order], distances=d.gather(1, order))

    def medoids(self) -> dict[int, int]:
        """Each class's prototype: the row of its image with the least summed distance to the class's other
        images (a medoid is a real photo, unlike a mean vector); ties: the lower row."""
        out: dict[int, int] = {}
        for c in sorted(set(self.labels.tolist())):
            rows = (self.labels == c).nonzero().flatten()
            total = self.distances(self._reference()[rows], rows).sum(1)
            out[int(c)] = int(rows[int(torch.argmin(total))])
        return out

    def describe(self, nb: Neighbours, q: int = 0) -> list[dict[str, Any]]:
        """Query ``q``'s neighbours as JSON-able records (row, path, class, distance)."""
        return [
            {
                "row": int(r),
                "path": self.paths[int(r)],
                "class": self.classes[int(self.labels[r])],
                "distance": float(d),
            }
            for r, d in zip(nb.rows[q], nb.distances[q], strict=True)
        ]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index as one ``.npz`` (no pickles), atomically."""
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                features=self.features.numpy().astype(np.float32),
                labels=self.labels.numpy().astype(np.int64),
                paths=np.array(self.paths, dtype=str),
                classes=np.array(self.classes, dtype=str),
                metric=np.array(self.metric),
                key=np.array(self.key),
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureIndex | None:
        """The index saved at ``path``, or None when it is missing or unreadable (then it is rebuilt)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    features=torch.from_numpy(z["features"].copy()),
                    labels=torch.from_numpy(z["labels"].copy()),
                    paths=[str(p) for p in z["paths"]],
                    classes=[str(c) for c in z["classes"]],
                    metric=str(z["metric"]),
                    key=str(z["key"]),
                )
        except (OSError, ValueError, KeyError, EOFError):
            return None


def index_for_run(
    trained: Any,
    run_dir: str | os.PathLike[str],
    *,
    split: str = "train",
    metric: str = "cosine",
    quiet: bool | None = None,
) -> FeatureIndex:
    """The feature index of the run's ``split`` images (its ``manifest.csv``): read from
    ``RUN_DIR/examples/index.npz`` when its key still fits, else computed (through the run's feature cache)
    and written there. One process computes it while others wanting the same file wait on a lock beside it
    and then read it (the ranks of a ``torchrun`` start together and would each extract every feature)."""
    from birdlens.data.dataset import ImageDataset
    from birdlens.data.manifest import Manifest
    from birdlens.train.features import FeatureCache, ViewSpec, describe_transform, extract_features
    from birdlens.train.parts import backbone_fingerprint
    from birdlens.train.probe import image_keys
    from birdlens.utils.console import progress

    run_dir = Path(run_dir)
    manifest_path = run_dir / layout.MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: the run lists no training images to compare with"
        )
    records = Manifest.from_csv(manifest_path).split(split)
    classes = list(trained.classes)
    ds = ImageDataset(records, transform=None, class_to_idx={c: i for i, c in enumerate(classes)})
    if len(ds) == 0:
        raise ValueError(f"{manifest_path} has no {split!r} images to compare with")
    keys = image_keys(ds)
    backbone = f"{trained.model_name}:{backbone_fingerprint(trained.model)}"
    tf = trained.transform()
    description = describe_transform(tf, trained.data_config.input_size)
    key = _index_key(backbone, description, metric, keys, ds.targets)
    path = run_dir / layout.EXAMPLES_INDEX
    cached = FeatureIndex.load(path)
    if cached is not None and cached.key == key:
        return cached
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        cached = FeatureIndex.load(path)  # another process may have written it while this one waited
        if cached is not None and cached.key == key:
            return cached
        cache = FeatureCache(_feature_cache_root(run_dir))
        device = next(trained.model.parameters()).device
        with progress(len(ds), f"features ({split}, for nearest examples)", quiet) as advance:
            feats = extract_features(
                trained.model,
                ds.load_image,
                keys,
                ViewSpec(tf, description, ("clean",)),
                cache,
                backbone,
                device=device,
                progress=advance,
            )[0]
        index = FeatureIndex(
            features=torch.from_numpy(feats.astype(np.float32)),
            labels=torch.tensor(ds.targets, dtype=torch.long),
            paths=[str(r.path) for r in ds.records],
            classes=classes,
            metric=metric,
            key=key,
        )
        index.save(path)
        return index


def _index_key(
    backbone: str, description: str, metric: str, keys: Sequence[str], labels: Sequence[int]
) -> str:
    h = hashlib.sha1(f"{FORMAT}|{backbone}|{description}|{metric}".encode())
    for k, y in zip(keys, labels, strict=True):
        h.update(f"|{k}:{y}".encode())
    return h.hexdigest()


def _feature_cache_root(run_dir: Path) -> Path:
    """The run's feature cache (``config.yaml`` ``feature_cache``, where a probe left its vectors), else one
    inside the run's examples folder."""
    from birdlens.train.config import TrainConfig

    try:
        root = TrainConfig.from_yaml(run_dir / layout.CONFIG).feature_cache
    except (OSError, ValueError):
        root = None
    return Path(root) if root else run_dir / Path(layout.EXAMPLES_INDEX).parent / "features"


def nearest_examples(
    index: FeatureIndex, feats: torch.Tensor, logits: torch.Tensor, k: int
) -> dict[str, Any]:
    """One image's example-based explanation: its ``k`` nearest indexed images from the predicted class and
    from the runner-up (the likeliest other class), with their distances, as JSON-able records."""
    from birdlens.explain.targets import runner_up

    row = logits.detach().float().reshape(1, -1)
    pred = int(row.argmax())
    second = int(runner_up(row, torch.tensor([pred]))[0])
    out: dict[str, Any] = {"metric": index.metric}
    for role, c in (("predicted", pred), ("runner_up", second)):
        nb = index.nearest(feats.reshape(1, -1), k, classes=[c])
        out[role] = {"class": index.classes[c], "neighbours": index.describe(nb)}
    return out


def thumbnail(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """A training image as a ``size`` px square (short side resized, centre crop), uint8 ``[H, W, 3]``."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.fit(im.convert("RGB"), (size, size)))


def draw_examples(
    photo: np.ndarray, examples: dict[str, Any], path: str | os.PathLike[str], size: int = 96
) -> None:
    """The strip of one image's nearest examples: the photo, then the neighbours from the predicted class and
    from the runner-up, each captioned with its distance."""
    from birdlens.explain.viz import image_strips

    rows: list[tuple[str, list[tuple[np.ndarray, str]]]] = [("explained photo", [(photo, "")])]
    for role, word in (("predicted", "predicted"), ("runner_up", "runner-up")):
        group = examples[role]
        cells = [(thumbnail(n["path"], size), f"{n['distance']:.3f}") for n in group["neighbours"]]
        rows.append((f"{word}: {group['class']}", cells))
    image_strips(rows, path, title=f"nearest training images ({examples['metric']} distance)")
