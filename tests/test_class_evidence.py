"""Class-level evidence: on a tiny synthetic set, a model that by construction reads only the beak relies on
the beak for every class (and on nothing else), and an explainer that points at the beak agrees with it."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _trainutil import untrained_cnn
from birdlens.data.manifest import Manifest
from birdlens.data.synth import PARTS, generate_dataset, load_spec, part_coverage, render_bird
from birdlens.explain.metrics.class_evidence import class_evidence, evaluate_class_evidence, map_part_shares
from birdlens.explain.metrics.evaluate import baseline_explain_fn, select_records
from birdlens.explain.metrics.parts import render_part_removals
from birdlens.explain.metrics.regions import label_mask_to_input_frame
from birdlens.models import eval_geometry
from birdlens.study.report_evidence import class_evidence_html

SIZE = 64
BEAK = PARTS.index("beak")
LOGIT = 6.0


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    return generate_dataset(
        tmp_path_factory.mktemp("ev") / "birds", classes=3, per_class=14, size=SIZE, seed=2, quiet=True
    )


class ReadsOnlyTheBeak(nn.Module):
    """Recognises each stored bird by its nearest original and scores its class by the share of the beak's
    interior pixels (output pixels entirely covered by the beak) that are unchanged: removing any other part
    cannot touch those pixels, removing the beak changes them."""

    def __init__(self, originals: torch.Tensor, beaks: torch.Tensor, labels: torch.Tensor, n_classes: int):
        super().__init__()
        self.register_buffer("originals", originals)
        self.register_buffer("beaks", beaks)
        self.register_buffer("labels", labels)
        self.n_classes = n_classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def match(self, x: torch.Tensor) -> torch.Tensor:
        return ((x[:, None] - self.originals[None]) ** 2).flatten(2).sum(2).argmin(1)

    def kept(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.match(x)
        same = (x - self.originals[idx]).abs().amax(1) < 1e-6
        beak = self.beaks[idx]
        return (same & beak).flatten(1).sum(1).float() / beak.flatten(1).sum(1).clamp_min(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.n_classes) + 0 * self.dummy
        out[torch.arange(x.shape[0]), self.labels[self.match(x)]] = LOGIT * self.kept(x)
        return out


def _setup(synth: Manifest):
    trained = untrained_cnn(synth.classes, SIZE)
    root = Path(synth.root)
    recs = select_records(synth, 6, seed=0, split="test")
    transform, geometry = trained.transform(), eval_geometry(trained.data_config, SIZE)

    def to_tensor(arr):
        return torch.as_tensor(
            transform(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))
        ).float()

    rendered = render_part_removals(root, [r.path for r in recs], to_tensor, SIZE, PARTS)
    masks = torch.stack(
        [label_mask_to_input_frame(m.numpy(), len(PARTS), geometry) for m in rendered["part_masks"]]
    )
    specs = [load_spec(root, r.path) for r in recs]
    beaks = torch.from_numpy(np.stack([part_coverage(s, SIZE)[BEAK] >= 1 - 1e-6 for s in specs]))
    labels = torch.tensor([synth.classes.index(r.label) for r in recs])
    model = ReadsOnlyTheBeak(rendered["originals"], beaks, labels, len(synth.classes))
    return specs, rendered, masks, beaks, labels, model


def test_a_beak_reading_model_relies_on_the_beak_and_a_beak_map_agrees(synth: Manifest):
    specs, rendered, masks, beaks, labels, model = _setup(synth)
    assert all(b.sum() > 0 for b in beaks)

    def beak_map(m, imgs, targets):  # an explainer that points at the beak of the bird it is shown
        return model.beaks[model.match(imgs)].float()

    res = class_evidence(
        model,
        rendered["originals"],
        rendered["removed"],
        masks,
        labels,
        {"beak oracle": beak_map, "random (baseline)": baseline_explain_fn("random", 0)},
        batch_size=4,
    )
    # the expected drop, computed from the renders alone: p(class) = softmax with logit 6 * kept-share
    c_n = len(synth.classes)
    p = lambda z: np.exp(z) / (np.exp(z) + c_n - 1)  # noqa: E731
    expected: dict[int, list[float]] = {}
    for spec, beak, lab in zip(specs, beaks.numpy(), labels.tolist(), strict=True):
        img, _ = render_bird(spec, SIZE)
        no_beak, _ = render_bird(spec, SIZE, remove="beak")
        kept = (np.abs(no_beak.astype(int) - img.astype(int)).max(-1) == 0)[beak].mean()
        expected.setdefault(lab, []).append(p(LOGIT) - p(LOGIT * kept))
    for c, drops in expected.items():
        row = res["drop"][c]
        assert row[BEAK] == pytest.approx(np.mean(drops), abs=1e-6)  # the model's softmax is float32
        assert row[BEAK] > 0.5
        others = [row[j] for j in range(len(PARTS)) if j != BEAK and np.isfinite(row[j])]
        assert others and all(v == 0.0 for v in others)  # nothing else matters to this model
        assert res["share"]["beak oracle"][c][BEAK] == pytest.approx(1.0)
        assert res["agreement"]["beak oracle"][c] == pytest.approx(1.0)
    rand = [v for v in res["agreement"]["random (baseline)"].values() if np.isfinite(v)]
    assert np.mean(rand) < 0.9


def test_part_shares_by_hand():
    masks = torch.tensor([[[1, 1, 2, 0]]])  # part 0 two pixels, part 1 one pixel
    maps = torch.tensor([[[1.0, 2.0, 1.0, 9.0]]])
    np.testing.assert_allclose(map_part_shares(maps, masks, 3), [[0.75, 0.25, 0.0]])
    np.testing.assert_allclose(map_part_shares(torch.zeros(1, 1, 4), masks, 3), [[2 / 3, 1 / 3, 0.0]])


def test_evaluate_class_evidence_writes_table_and_figure_and_refuses_photos(synth: Manifest, tmp_path: Path):
    trained = untrained_cnn(synth.classes, SIZE)
    res = evaluate_class_evidence(trained, synth, ["gradcam"], n_per_class=2, out_dir=tmp_path, seed=0)
    saved = json.loads((tmp_path / "class_evidence.json").read_text())
    assert saved["figure"] == "figures/class_evidence.png" and (tmp_path / saved["figure"]).is_file()
    assert set(saved["classes"]) == set(synth.classes) and saved["parts"] == list(PARTS)
    assert all(saved["n"][c] == 2 for c in synth.classes)
    assert set(res["share"]) == {"gradcam", "random (baseline)"}
    for c in synth.classes:
        assert len(saved["drop"][c]) == len(PARTS)
        assert saved["top_part"]["model"][c] in (*PARTS, None)  # None: every part's drop is equal
    page = class_evidence_html(tmp_path)  # the study report's section
    assert page.count("<table>") == 2 and 'src="data:image/png;base64,' in page
    assert all(html.escape(c) in page for c in synth.classes) and "mean ρ" in page
    assert class_evidence_html(tmp_path / "nothing") == ""
    photos = Manifest([r for r in synth.records], root=tmp_path / "photos")
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="synthetic-bird dataset") as err:
        evaluate_class_evidence(trained, photos, ["gradcam"], n_per_class=1)
    assert "\n" not in str(err.value)


def test_error_views_pick_the_confused_images_and_draw_both_maps(tmp_path: Path):
    from _trainutil import make_image_folder
    from birdlens.data import load_manifest
    from birdlens.data.images import load_rgb
    from birdlens.study.error_views import confused_images, write_error_views
    from birdlens.study.report_evidence import error_views_html

    root = make_image_folder(tmp_path / "photos", n_classes=3, train=1, valid=1, test=4, size=40)
    records = load_manifest(root).split("test").records
    trained = untrained_cnn(sorted({r.label for r in records}), 40)
    tf = trained.transform()
    with torch.no_grad():
        probs = trained.model(torch.stack([tf(load_rgb(r.path)) for r in records])).softmax(-1)
    pred = [trained.classes[int(i)] for i in probs.argmax(1)]
    wrong = [(r, p, float(q.max())) for r, p, q in zip(records, pred, probs, strict=True) if r.label != p]
    assert wrong, "the untrained model should misread some images"
    r0, p0, _ = wrong[0]
    pairs = [{"true": r0.label, "pred": p0, "count": 1}]
    got = confused_images(trained, records, pairs, per_pair=10)
    expected = [(str(r.path), p) for r, p, _ in wrong if r.label == r0.label and p == p0]
    assert sorted((g["path"], g["pred"]) for g in got) == sorted(expected)
    metrics = {
        "top_losses": [{"path": str(r.path), "true": r.label, "pred": p, "prob": q} for r, p, q in wrong],
        "most_confused": pairs,
    }
    paths = write_error_views(trained, metrics, records, tmp_path / "views")
    assert [Path(p).name for p in paths] == ["top_loss_views.png", "confused_views.png"]
    assert all(Path(p).stat().st_size > 1000 for p in paths)
    page = error_views_html({"evaluate:cnn": {"entry": {"name": "cnn"}, "views": paths}})
    assert page.count("<img") == 2 and "most-confused pairs" in page
