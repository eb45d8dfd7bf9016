"""Run the shortcut audit on a trained run: per class, background reliance, SpRAy clusters, the counterfactual.

Object regions: the data's part/segmentation mask grown by 1/16 of the side, else its box; otherwise the
model-free :func:`central_object` (the middle ``CENTRAL_SHARE`` of each side) joined with the model's own
estimate :func:`birdlens.explain.audit.signals.others_object` (where the evidence for the image's other likely
classes lies, which covers a bird's head outside the middle). A cluster is
also a suspect when its region's pixels agree across the class's images far more than across other classes'
(:func:`birdlens.explain.audit.signals.agreeing_pixels`): a pasted mark, wherever the object estimate puts it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from birdlens.data.manifest import Manifest, Record
from birdlens.explain.audit.counterfactual import paste, sign_test, wilson_interval
from birdlens.explain.audit.signals import (
    agreeing_pixels,
    carries,
    mark_extent,
    others_object,
)
from birdlens.explain.audit.spray import spray
from birdlens.utils import console

CENTRAL_SHARE = 0.5
AUDIT_JSON = "audit.json"
EVIDENCE_DIR = "audit"


class AuditInputError(ValueError):
    """The run or data cannot be audited (no train split, classes that do not match): nothing is written."""


@dataclass(frozen=True)
class AuditConfig:
    """The audit's settings; every threshold is here, and recorded in ``audit.json``."""

    method: str = "hirescam"  # exact for a dense head; Grad-CAM's pooled weights missed most planted cues
    per_class: int = 48  # train images explained per class (seeded sample)
    recipients: int = 200  # other-class held-out (test, valid) images the suspect region is pasted onto
    donors: int = 8  # suspect-class images the region is taken from
    # flagged iff the flip rate's 95% lower bound is above ``threshold`` (the "ignored" level: a cue
    # that may flip under 2% is not called used); the mark rule, not this threshold, is what keeps clean
    # classes unflagged. A suspect that is no mark (flag_background) must also flip more recipients than the
    # control's pixels do, by a paired sign test at ``alpha`` (None: its rate merely above the control's);
    # a mark only with ``mark_control``: an edge-like mark (a frame) moves a model at the seam any paste
    # there leaves, so the control flipped as often (20-32% on Lite0 runs) and hid 3 of 9 such shortcuts
    threshold: float = 0.02
    alpha: float | None = 0.05
    mark_control: bool = False
    min_share: float = 0.15  # a suspect cluster holds at least this share of the class's maps ...
    min_consistency: float = 0.5  # ... whose pooled maps agree this much (mean cosine to their centre) ...
    max_region: float = 0.2  # ... covers at most this share of the image (pasting more is a new image) ...
    min_agreement: float = 0.1  # ... and its pixels agree across donors this much more than across others
    min_off_object: float = 0.5  # (or, with flag_background, its region lies this much outside the object)
    flag_background: bool = (
        False  # off-object evidence that is no repeated mark flagged 4 of 14 clean classes
    )
    object_classes: int = 3  # no mask or box: the object is where the maps of this many other classes lie ...
    object_level: float = 0.5  # ... reaching this share of their mean map's maximum
    agree_tol: float = 12.0  # pixel agreement: within this (0-255, every channel) of the per-pixel median ...
    agree_quorum: float = 0.75  # ... in at least this share of the images
    max_mark: float = 0.35  # a mark is pasted whole (all its agreeing pixels) up to this share of the image
    min_mark: float = 0.005  # no cluster on a mark: the class's own shared pixels, if this share, are tested
    mark_edge: int = 1  # a pasted mark takes this margin (px) of its donors: a resized mark's outline blends
    # with each photo's own pixels, so agreement misses it, and the mark without it moved a Lite0 half as much
    grid: int = 8
    max_clusters: int = 4
    batch: int = 16
    seed: int = 0


@dataclass
class ClassAudit:
    """The audit of one class (one entry of ``audit.json``'s ``classes``)."""

    flagged: bool
    verdict: str
    flip_rate: float
    ci95: list[float]
    control_rate: float
    control_p: float  # paired sign test of the suspect's flips against the control's (one-sided)
    background_reliance: float
    n_images: int
    n_recipients: int
    clusters: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)


def central_object(size: int, share: float = CENTRAL_SHARE) -> np.ndarray:
    """Bool ``[size, size]``: the model-free object estimate, the central ``share`` of each side."""
    m = np.zeros((size, size), dtype=bool)
    lo, hi = round(size * (1 - share) / 2), round(size * (1 + share) / 2)
    m[lo:hi, lo:hi] = True
    return m


class _Images:
    """Records as the model sees them: uint8 photos ``[N, S, S, 3]`` and object masks ``[N, S, S]``."""

    def __init__(self, trained: Any, records: Sequence[Record]) -> None:
        from birdlens.explain.metrics.regions import box_image, to_input_frame
        from birdlens.models import eval_geometry

        geom = eval_geometry(trained.data_config, trained.image_size)
        photos, objects, known = [], [], []
        for r in records:
            with Image.open(r.path) as im:
                arr = np.asarray(im.convert("RGB"))
            photo = torch.as_tensor(geom(torch.from_numpy(arr.copy()).permute(2, 0, 1))).permute(1, 2, 0)
            photos.append(photo.numpy().astype(np.uint8))
            # the mask grown by a CAM-sized margin (evidence on the bird's outline is not off the object),
            # else the box
            if r.mask is not None and Path(r.mask).is_file():
                with Image.open(r.mask) as m:
                    obj = to_input_frame(np.asarray(m.convert("L")), geom).numpy()
                obj = _dilate(obj, max(1, round(obj.shape[0] / 16)))
            elif r.box is not None:
                obj = to_input_frame(box_image(r.box, (arr.shape[1], arr.shape[0])), geom).numpy()
            else:
                obj = np.zeros(photos[-1].shape[:2], bool)
            known.append(bool(obj.any()))
            objects.append(obj if obj.any() else central_object(photos[-1].shape[0]))
        size = trained.image_size
        self.records = list(records)
        self.photos = np.stack(photos) if photos else np.zeros((0, size, size, 3), np.uint8)
        self.objects = np.stack(objects) if objects else np.zeros((0, size, size), bool)
        self.known = np.array(known, dtype=bool)  # False: no mask or box, the object is to be estimated


def _tensor(trained: Any, photos: np.ndarray) -> torch.Tensor:
    dc = trained.data_config
    x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(dc.mean).view(1, 3, 1, 1)) / torch.tensor(dc.std).view(1, 3, 1, 1)


def predict(trained: Any, photos: np.ndarray, batch: int = 32) -> np.ndarray:
    """Predicted class index of each uint8 photo (already in the model's input frame)."""
    out = [
        trained.predict_proba(_tensor(trained, photos[i : i + batch])).argmax(1).numpy()
        for i in range(0, len(photos), batch)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=int)


def _explain(explainer: Any, trained: Any, photos: np.ndarray, target: int, batch: int) -> torch.Tensor:
    maps = [
        explainer.explain(_tensor(trained, photos[i : i + batch]), target=target).maps
        for i in range(0, len(photos), batch)
    ]
    return torch.cat(maps)


def _check_inputs(trained: Any, manifest: Manifest) -> tuple[Manifest, Manifest]:
    train = manifest.split("train").filter(labels=trained.classes)
    if not train.records:
        raise AuditInputError(
            "the data has no train split with the run's classes: the audit explains training images "
            "(give --data the dataset the run was trained on)"
        )
    # both held-out splits: the more recipients, the tighter a flip rate's interval
    pool = manifest.with_records(r for r in manifest if r.split in ("test", "valid")).filter(
        labels=trained.classes
    )
    if not pool.records:
        raise AuditInputError(
            "the data has no test or valid split: the counterfactual pastes onto held-out images"
        )
    missing = sorted(set(trained.classes) - set(train.classes))
    if missing:
        raise AuditInputError(f"classes of the run with no train images in --data: {', '.join(missing[:5])}")
    return train, pool


def _sample(records: Sequence[Record], n: int, rng: np.random.Generator) -> list[Record]:
    if len(records) <= n:
        return list(records)
    idx = np.sort(rng.choice(len(records), size=n, replace=False))
    return [records[i] for i in idx]


def _as_predicted(
    train: Manifest, pred: dict[Record, int], name: str, index: int, least: int = 6
) -> list[Record]:
    """The class's train images the model predicts as the class (its evidence for the class is used there),
    or all of them when fewer than ``least`` are."""
    own = [r for r in train if r.label == name]
    hit = [r for r in own if pred[r] == index]
    return hit if len(hit) >= least else own


def _minmax(maps: torch.Tensor) -> np.ndarray:
    m = torch.nan_to_num(maps.float(), nan=0.0).clamp_min(0).numpy()
    top = m.reshape(len(m), -1).max(1).reshape(-1, 1, 1)
    return m / np.where(top > 0, top, 1.0)


def _objects(explainer: Any, trained: Any, images: _Images, target: int, cfg: AuditConfig) -> np.ndarray:
    """The object masks; where the data gave none, the central estimate widened by :func:`others_object`
    (grown like a mask) of each image's ``cfg.object_classes`` likeliest classes other than ``target``: a
    union, so the estimate can only keep evidence on the bird from being called off it."""
    objects = images.objects.copy()
    todo = np.nonzero(~images.known)[0]
    k = min(cfg.object_classes, len(trained.classes) - 1)
    if len(todo) == 0 or k < 1:
        return objects
    photos = images.photos[todo]
    proba = torch.cat(
        [
            trained.predict_proba(_tensor(trained, photos[i : i + cfg.batch]))
            for i in range(0, len(photos), cfg.batch)
        ]
    )
    proba[:, target] = -1
    ranked = proba.argsort(1, descending=True)[:, :k]
    others = np.stack(
        [
            torch.cat(
                [
                    explainer.explain(
                        _tensor(trained, photos[i : i + cfg.batch]), target=ranked[i : i + cfg.batch, j]
                    ).maps
                    for i in range(0, len(photos), cfg.batch)
                ]
            ).numpy()
            for j in range(k)
        ],
        axis=1,
    )
    est = others_object(others, cfg.object_level)
    grow = max(1, round(objects.shape[1] / 16))
    for n, i in enumerate(todo):
        objects[i] |= _dilate(est[n], grow) if est[n].any() else False
    return objects


def _clusters(
    maps: torch.Tensor, photos: np.ndarray, objects: np.ndarray, others: np.ndarray, cfg: AuditConfig
) -> list[dict[str, Any]]:
    """SpRAy clusters with what decides a suspect: share, consistency, region, its off-object share and its
    pixel agreement; and the donors its region would be pasted from (off their own object first)."""
    s = spray(maps, grid=cfg.grid, max_k=cfg.max_clusters, seed=cfg.seed)
    norm = _minmax(maps)
    grow = max(1, round(photos.shape[1] / 16))
    out = []
    for c in range(s.k):
        idx = s.members(c)
        mean = norm[idx].mean(0)
        region = mean >= 0.5 * mean.max() if mean.max() > 0 else np.ones_like(mean, bool)
        off = float(np.mean([(region & ~objects[i]).sum() / region.sum() for i in idx]))
        grown = _dilate(region, grow)
        inside = np.array([maps[i].clamp_min(0)[torch.from_numpy(grown)].sum().item() for i in idx])
        off_each = np.array([(grown & ~objects[i]).sum() / grown.sum() for i in idx])
        # the most relevant members whose pasted pixels are off their own object: pasting a piece of the
        # bird may flip a prediction for the right reason
        order = np.lexsort((-inside, (off_each < cfg.min_off_object)))
        donors = idx[order[: cfg.donors]]
        mark_px, mark_median = agreeing_pixels(photos[donors], grown, cfg.agree_tol, cfg.agree_quorum)
        common = agreeing_pixels(others, grown, cfg.agree_tol, cfg.agree_quorum)[0]
        agreement = float(mark_px.sum() / grown.sum()) - float(common.sum() / grown.sum())
        mark_px &= ~common  # the mark is what the class shares and other classes do not
        info = {
            "size": len(idx),
            "share": len(idx) / len(norm),
            "consistency": s.consistency(c),
            "off_object": off,
            "pixel_agreement": agreement,
            "region_share": float(region.mean()),
            "k": s.k,
            "source": "maps",
        }
        compact = (
            info["share"] >= cfg.min_share
            and info["consistency"] >= cfg.min_consistency
            and info["region_share"] <= cfg.max_region
        )
        info["mark"] = compact and agreement >= cfg.min_agreement
        info["background"] = compact and not info["mark"] and off >= cfg.min_off_object
        info["suspect"] = info["mark"] or (cfg.flag_background and info["background"])
        if info["mark"]:
            # paste the mark itself, all of it, and nothing around it: the whole of a frame, not the piece the
            # evidence points at, and not the bird pixels a coarse CAM region also covers
            everywhere = np.ones(grown.shape, bool)
            agree, median = agreeing_pixels(photos[donors], everywhere, cfg.agree_tol, cfg.agree_quorum)
            exclusive = agree & ~agreeing_pixels(others, everywhere, cfg.agree_tol, cfg.agree_quorum)[0]
            whole = mark_extent(mark_px, exclusive)
            mark_px = whole if whole.mean() <= cfg.max_mark else mark_px
            mark_median = median
            grown, donors = _mark_paste(photos, idx[order], mark_px, mark_median, cfg)
        info["pasted_share"] = float(grown.mean())
        out.append(
            {
                **info,
                "_members": idx,
                "_region": region,
                "_mean": mean,
                "_grown": grown,
                "_mark": (mark_px, mark_median),
                "_donors": donors,
            }
        )
    return out


def _mark_paste(
    photos: np.ndarray, candidates: np.ndarray, mark: np.ndarray, median: np.ndarray, cfg: AuditConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``(region, donors)`` to paste a mark with: the mark grown by ``cfg.mark_edge`` px (not past
    ``cfg.max_mark``), from the first ``cfg.donors`` of ``candidates`` that show the mark (a class image
    without it, p < 1, would paste its own background there)."""
    showing = candidates[carries(photos[candidates], mark, median, cfg.agree_tol, cfg.agree_quorum)]
    donors = (showing if len(showing) else candidates)[: cfg.donors]
    region = _dilate(mark, cfg.mark_edge) if cfg.mark_edge > 0 else mark
    return (region if region.mean() <= cfg.max_mark else mark), donors


def _dilate(region: np.ndarray, px: int) -> np.ndarray:
    """``region`` grown by ``px`` pixels (a square structuring element): a CAM is coarser than the input, and
    its half-maximum region can miss the edge of a cue, so the pasted region takes a margin around it."""
    t = torch.from_numpy(region.astype(np.float32))[None, None]
    return (torch.nn.functional.max_pool2d(t, 2 * px + 1, stride=1, padding=px)[0, 0] > 0).numpy()


def _pixel_mark(
    maps: torch.Tensor,
    photos: np.ndarray,
    objects: np.ndarray,
    others: np.ndarray,
    cfg: AuditConfig,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """A mark the maps missed: the pixels that ``cfg.donors`` of the class's images share and other classes'
    do not (a global mark such as a frame can move a model while its CAM stays on the bird); ``[]`` if they
    cover less than ``min_mark`` or more than ``max_mark`` of the image."""
    pick = np.sort(rng.choice(len(photos), size=min(cfg.donors, len(photos)), replace=False))
    everywhere = np.ones(photos.shape[1:3], bool)
    mark_px, median = agreeing_pixels(photos[pick], everywhere, cfg.agree_tol, cfg.agree_quorum)
    region = mark_px & ~agreeing_pixels(others, everywhere, cfg.agree_tol, cfg.agree_quorum)[0]
    if not cfg.min_mark <= region.mean() <= cfg.max_mark:
        return []
    pasted, donors = _mark_paste(photos, rng.permutation(len(photos)), region, median, cfg)
    off = float(np.mean([(region & ~objects[i]).sum() / region.sum() for i in pick]))
    info = {
        "size": len(pick),
        "share": 0.0,  # not a cluster of maps: found in the pixels
        "consistency": 0.0,
        "off_object": off,
        "pixel_agreement": 1.0,
        "region_share": float(region.mean()),
        "k": 0,
        "source": "pixels",
        "mark": True,
        "background": False,
        "suspect": True,
        "pasted_share": float(pasted.mean()),
    }
    mean = _minmax(maps[torch.from_numpy(pick)]).mean(0)
    return [
        {
            **info,
            "_members": pick,
            "_region": region,
            "_mean": mean,
            "_grown": pasted,
            "_mark": (region, median),
            "_donors": donors,
        }
    ]


def _pick(clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """The cluster to test when none is a suspect, for the record: the best off-object one (share x
    off-object), else the largest."""
    background = [c for c in clusters if c["background"]]
    if background:
        return max(background, key=lambda c: c["share"] * c["off_object"])
    return max(clusters, key=lambda c: c["share"])


def _others(
    photos: np.ndarray, labels: np.ndarray, target: int, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` other-class train images: what a region's pixel agreement is compared with (train, since in test
    a planted cue may sit on every class)."""
    ok = np.nonzero(labels != target)[0]
    return photos[np.sort(rng.choice(ok, size=min(n, len(ok)), replace=False))]


class _Counterfactual:
    """Paste one region from donor photos onto recipients; count flips to the class (and a control's)."""

    def __init__(self, trained: Any, pool: _Images, pool_pred: np.ndarray) -> None:
        self.trained, self.pool, self.pool_pred = trained, pool, pool_pred
        self.labels = np.array([trained.classes.index(r.label) for r in pool.records])

    def run(
        self,
        target: int,
        donors: np.ndarray,
        region: np.ndarray,
        cfg: AuditConfig,
        rng: np.random.Generator,
        mark: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """Flips among other-class recipients not predicted as ``target``, and not already showing ``mark``
        (its agreeing pixels and their median): pasting a mark onto an image that has it tests nothing."""
        ok = (self.labels != target) & (self.pool_pred != target)
        if mark is not None:
            ok &= ~carries(self.pool.photos, *mark, cfg.agree_tol, cfg.agree_quorum)
        ok = np.nonzero(ok)[0]
        ok = ok if len(ok) <= cfg.recipients else np.sort(rng.choice(ok, size=cfg.recipients, replace=False))
        recipients = self.pool.photos[ok]
        if len(recipients) == 0:
            return {"flips": 0, "n": 0, "control": 0.0, "control_p": 1.0, "target": target}
        pasted = paste(recipients, donors, region)
        after = predict(self.trained, pasted, cfg.batch * 2)
        # control: the same region from other-class images (shuffled recipients): pasting *something* there
        # should not be what flips predictions to the class
        ctrl_donors = recipients[rng.permutation(len(recipients))]
        ctrl = predict(self.trained, paste(recipients, ctrl_donors, region), cfg.batch * 2)
        hit, ctrl_hit = after == target, ctrl == target
        return {
            "flips": int(hit.sum()),
            "n": len(recipients),
            "control": float(ctrl_hit.mean()),
            "control_p": sign_test(int((hit & ~ctrl_hit).sum()), int((ctrl_hit & ~hit).sum())),
            "target": target,
            "pasted": pasted,
            "recipients": recipients,
            "after": after,
        }


def _audit_class(
    name: str,
    trained: Any,
    explainer: Any,
    images: _Images,
    cf: _Counterfactual,
    others: np.ndarray,
    cfg: AuditConfig,
    out: Path | None,
    rng: np.random.Generator,
) -> ClassAudit:
    """One class: maps of its train images, background reliance, SpRAy, then the counterfactual on every
    suspect cluster (the largest cluster when there is none, for the record); flagged if one passes."""
    from birdlens.explain.metrics.localisation import energy_share

    target = trained.classes.index(name)
    maps = _explain(explainer, trained, images.photos, target, cfg.batch)
    objects = _objects(explainer, trained, images, target, cfg)
    background = float(1 - energy_share(maps, torch.from_numpy(objects)).mean())
    clusters = _clusters(maps, images.photos, objects, others, cfg)
    if not any(c["mark"] for c in clusters):
        clusters += _pixel_mark(maps, images.photos, objects, others, cfg, rng)
    suspects = sorted((c for c in clusters if c["suspect"]), key=lambda c: -c["share"] * c["off_object"])
    tests = [(c, _test(c, images, cf, cfg, rng, target)) for c in (suspects or [_pick(clusters)])]
    chosen, res = max(tests, key=lambda t: (t[1]["flagged"], t[1]["ci95"][0]))
    verdict = _verdict(chosen, res["flagged"], res["rate"], res["ci95"][0], res)
    evidence = _evidence(out, name, res["donor"], chosen, res) if out else []
    public = [{k: v for k, v in c.items() if not k.startswith("_")} for c in clusters]
    for c, pub in zip(clusters, public, strict=True):
        for tested, r in tests:
            if tested is c:
                pub.update(
                    tested=True,
                    flip_rate=r["rate"],
                    ci95=r["ci95"],
                    control_rate=r["control"],
                    control_p=r["control_p"],
                )
    return ClassAudit(
        flagged=res["flagged"],
        verdict=verdict,
        flip_rate=res["rate"],
        ci95=res["ci95"],
        control_rate=res["control"],
        control_p=res["control_p"],
        background_reliance=background,
        n_images=len(images.photos),
        n_recipients=res["n"],
        clusters=public,
        evidence=evidence,
    )


def _test(
    cluster: dict[str, Any],
    images: _Images,
    cf: _Counterfactual,
    cfg: AuditConfig,
    rng: np.random.Generator,
    target: int,
) -> dict[str, Any]:
    """The counterfactual for one cluster: its (grown) region from its donors, pasted."""
    donors = images.photos[cluster["_donors"]]
    res = cf.run(target, donors, cluster["_grown"], cfg, rng, cluster["_mark"] if cluster["mark"] else None)
    rate = res["flips"] / res["n"] if res["n"] else 0.0
    lo, hi = wilson_interval(res["flips"], res["n"])
    above = rate > res["control"] if cfg.alpha is None else res["control_p"] < cfg.alpha
    controlled = not cluster["mark"] or cfg.mark_control
    flagged = bool(cluster["suspect"] and lo > cfg.threshold and (above or not controlled))
    return {
        **res,
        "rate": rate,
        "ci95": [lo, hi],
        "flagged": flagged,
        "beats_control": above,
        "donor": donors[0],
    }


def _verdict(cluster: dict[str, Any], flagged: bool, rate: float, lo: float, res: dict[str, Any]) -> str:
    pct = f"{100 * rate:.0f}% of {res['n']} other-class images flip to it (95% lower bound {100 * lo:.0f}%)"
    what = "a repeated mark (its pixels agree across the class)" if cluster["mark"] else "off-object evidence"
    if flagged:
        seam = (  # a mark flagged though the control flips as often (the rule's reading, not a new test)
            f"; pasting other images' pixels there flips {100 * res['control']:.0f}% too: the model answers "
            "anything at this place, as a frame's edge"
            if not res["beats_control"] and res["control"] > 0.05
            else ""
        )
        return f"shortcut: {what}; pasted, {pct}{seam}"
    if cluster["suspect"]:
        return (
            f"{what}, but pasting it does not make the prediction ({pct}; control "
            f"{100 * res['control']:.0f}%, paired p = {res['control_p']:.2g}): a cue in the data, not used by "
            "this model"
        )
    if cluster["background"]:
        return (
            f"off-object evidence that is no repeated mark (background?); pasted: {pct}; not flagged "
            "(flag_background off)"
        )
    return f"evidence on the object (no compact off-object cluster); its top region pasted: {pct}"


def _evidence(
    out: Path, name: str, donor: np.ndarray, chosen: dict[str, Any], res: dict[str, Any]
) -> list[str]:
    """``OUT/audit/<class>_cluster.png`` (map over a donor, region outlined) and ``_paste.png`` (before, after)."""
    from birdlens.explain.targets import file_slug
    from birdlens.explain.viz import heatmap_overlay, save_png

    region = chosen["_region"]
    over = heatmap_overlay(donor, chosen["_mean"])
    edge = region & ~(
        np.roll(region, 1, 0) & np.roll(region, -1, 0) & np.roll(region, 1, 1) & np.roll(region, -1, 1)
    )
    over[edge] = (0, 255, 0)
    rel = [f"{EVIDENCE_DIR}/{file_slug(name, 'class')}_cluster.png"]
    save_png(out / rel[0], over)
    if res["n"]:
        flipped = np.nonzero(res["after"] == res["target"])[0]
        i = int(flipped[0]) if len(flipped) else 0
        rel.append(f"{EVIDENCE_DIR}/{file_slug(name, 'class')}_paste.png")
        save_png(out / rel[1], np.concatenate([res["recipients"][i], res["pasted"][i]], axis=1))
    return rel


def audit_run(
    trained: Any,
    manifest: Manifest,
    out: str | os.PathLike[str] | None,
    cfg: AuditConfig | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Audit every class of ``trained`` on ``manifest`` (train split explained, test pasted onto).

    Writes ``OUT/audit.json`` (atomically) and the evidence images under ``OUT/audit/`` when ``out`` is
    given; returns the same dict. Bad input raises :class:`AuditInputError` before anything is written.
    """
    from birdlens.explain.base import explainer_for
    from birdlens.runs.trained import refuse_multi_label
    from birdlens.utils.atomic import write_json

    cfg = cfg or AuditConfig()
    refuse_multi_label(trained, "the shortcut audit")
    train, pool_m = _check_inputs(trained, manifest)
    explainer = explainer_for(trained, cfg.method)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xA0D]))
    pool = _Images(trained, pool_m.records)
    cf = _Counterfactual(trained, pool, predict(trained, pool.photos, cfg.batch * 2))
    out_p = Path(out) if out is not None else None
    classes: dict[str, Any] = {}
    train_photos = _Images(trained, train.records).photos
    train_labels = np.array([trained.classes.index(r.label) for r in train.records])
    train_pred = dict(zip(train.records, predict(trained, train_photos).tolist(), strict=True))
    for name in console.track(trained.classes, len(trained.classes), "audit classes", quiet):
        recs = _sample(
            _as_predicted(train, train_pred, name, trained.classes.index(name)), cfg.per_class, rng
        )
        classes[name] = asdict(
            _audit_class(
                name,
                trained,
                explainer,
                _Images(trained, recs),
                cf,
                _others(train_photos, train_labels, trained.classes.index(name), cfg.donors, rng),
                cfg,
                out_p,
                rng,
            )
        )
    result = {
        "classes": classes,
        "flagged": sorted(k for k, v in classes.items() if v["flagged"]),
        "settings": {**asdict(cfg), "central_share": CENTRAL_SHARE},
        "note": "evidence paths are relative to this file's folder; flip_rate: share of other-class test "
        "and valid images (not already predicted as the class) predicted as the class once the suspect region is "
        "pasted on; flagged iff a compact cluster's region is a mark (pixel_agreement >= min_agreement) or, "
        "with flag_background, off the object (off_object >= min_off_object), and ci95[0] > threshold; a "
        "suspect that is no mark (or any, with mark_control) must also flip more recipients than the control "
        "does (the same region from other classes' images, on the same recipients): control_p, a one-sided "
        "exact sign test on the paired recipients, below alpha (alpha null: flip_rate > control_rate); without a mask or box the object is the centre (central_share) joined with "
        "where the maps of the image's object_classes likeliest other classes reach object_level of their "
        "maximum",
    }
    if out_p is not None:
        write_json(out_p / AUDIT_JSON, result)
    return result
