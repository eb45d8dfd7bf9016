"""A generator exported alone with its data record, the one shipped for the demo, and the study's GAN stage on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from _data_helpers import tiny_image_set
from birdlens.augment.gan.checkpoint import load_meta
from birdlens.augment.gan.config import GANConfig
from birdlens.augment.gan.evaluate import sample_images
from birdlens.augment.gan.export import SYNTH_KEYS, data_mismatch, data_record, export_generator
from birdlens.augment.gan.train import CHECKPOINT, load_generator, train_gan
from birdlens.study.config import GanConfig, load_study_config
from birdlens.study.pipeline import _generator_file, gan_stage
from birdlens.study.run import bundled_config
from birdlens.study.stages import StageContext

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "birdlens" / "configs"


def _tiny_run(out: Path, classes: list[str]) -> Path:
    data = tiny_image_set(n=len(classes) * 4, size=16, classes=len(classes))
    data.classes = classes
    cfg = GANConfig(image_size=16, iterations=2, batch_size=4, g_width=8, d_width=8, sample_every=0)
    train_gan(cfg, data, out, quiet=True)
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from birdlens.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth") / "dataset"
    generate_dataset(out, classes=2, per_class=6, size=32, seed=0, force=True, quiet=True)
    return out


def test_export_keeps_the_sampling_generator_and_the_data_record(tmp_path):
    run = _tiny_run(tmp_path / "run", ["A", "B"])
    record = {"source": "synth", "seed": 3}
    path = export_generator(run, tmp_path / "g.safetensors", record)
    assert path.stat().st_size < (run / CHECKPOINT).stat().st_size  # no discriminator, no optimisers
    meta = load_meta(path)
    assert meta["data"] == record and meta["classes"] == ["A", "B"] and meta["weights"] == "ema"
    a, b = load_generator(run), load_generator(path)
    labels = torch.tensor([0, 1, 1])
    assert torch.equal(sample_images(a.G, labels, 128, seed=1), sample_images(b.G, labels, 128, seed=1))
    assert b.iteration == a.iteration == 2


def test_export_command(tmp_path, synth):
    from birdlens.cli import app

    run = _tiny_run(tmp_path / "run", ["A", "B"])
    out = tmp_path / "g.safetensors"
    res = CliRunner().invoke(
        app, ["gan", "export", "--run", str(run), "--data", str(synth), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert load_meta(out)["data"] == data_record(synth)
    res = CliRunner().invoke(
        app, ["gan", "export", "--run", str(tmp_path / "none"), "--data", ".", "--out", "x"]
    )
    assert res.exit_code == 2 and "no GAN checkpoint" in res.output


def test_data_mismatch_names_what_differs(synth):
    actual = data_record(synth)
    assert actual["source"] == "synth" and actual["per_class"] == 6 and actual["seed"] == 0
    assert data_mismatch(actual, actual, ["A"], ["A"]) == ""
    why = data_mismatch({**actual, "per_class": 60}, actual, ["A"], ["A"])
    assert "per_class 60 vs 6" in why
    assert "classes" in data_mismatch(actual, actual, ["A", "B"], ["A"])
    assert data_mismatch({"source": "path"}, actual, ["A"], ["A"]) != ""


def test_the_shipped_generator_was_trained_on_the_demos_data_from_its_recipe():
    """What the demo checks at run time, checked here too: the shipped file fits the packaged demo config."""
    path = _generator_file("demo")
    assert path.stat().st_size < 5_000_000
    cfg = load_study_config(bundled_config("demo"))
    meta = load_meta(path)
    data = meta["data"]
    assert data["source"] == "synth" and set(SYNTH_KEYS) <= set(data)
    assert (data["seed"], data["size"], data["per_class"]) == (
        cfg.seed,
        cfg.data.synth.size,
        cfg.data.synth.per_class,
    )
    assert len(meta["classes"]) == cfg.data.synth.classes
    recipe = yaml.safe_load((CONFIGS / "demo-gan.yaml").read_text())
    assert {k: meta["config"][k] for k in recipe} == recipe
    assert meta["iteration"] == recipe["iterations"]


def _ctx(tmp: Path, dataset: Path, gan: dict, needed: bool = False) -> StageContext:
    g = GanConfig(enabled=True, per_class=3, **gan)
    out = tmp / "gan"
    out.mkdir(parents=True)
    return StageContext(
        name="gan",
        dir=out,
        run_dir=tmp,
        config={"gan": g, "seed": 0, "split": "test", "needed": needed},
        inputs={"data": {"dataset": str(dataset)}},
        resume=False,
    )


def test_gan_stage_skips_a_generator_trained_on_other_data(tmp_path, synth):
    summary = gan_stage(_ctx(tmp_path, synth, {"generator": "demo"}))
    assert "per_class 60 vs 6" in summary["skipped"]
    assert not (tmp_path / "gan" / "samples").exists()
    with pytest.raises(ValueError, match="does not fit this study"):
        gan_stage(_ctx(tmp_path / "b", synth, {"generator": "demo"}, needed=True))


def test_gan_stage_samples_and_compares_a_matching_generator(tmp_path, synth):
    from birdlens.data import load_manifest

    classes = load_manifest(synth).classes
    run = _tiny_run(tmp_path / "run", classes)
    gen = export_generator(run, tmp_path / "g.safetensors", data_record(synth))
    compare = {"seeds": [0, 1], "classic_copies": 1, "per_class": 2, "feature_size": 32}
    summary = gan_stage(_ctx(tmp_path / "st", synth, {"generator": str(gen), "compare": compare}))
    assert Path(summary["sample_grid"]).stat().st_size > 0
    assert len(list((tmp_path / "st" / "gan" / "samples" / "train").glob("*/gan_*.png"))) == 3 * len(classes)
    rows = summary["compare"]["summary"]["all"]
    assert set(rows) == {"real", "real+classic", "real+gan", "real+classic+gan"}
    assert all(len(r["per_seed"]) == 2 and 0 <= r["mean"] <= 1 for r in rows.values())
    assert "verdict" in rows["real+gan"]["diff_vs_real+classic"]
    assert Path(summary["compare"]["figure"]).stat().st_size > 0


def test_the_reports_gan_section_shows_samples_and_the_effect_with_its_interval(tmp_path, synth):
    from birdlens.data import load_manifest
    from birdlens.study.report_stage import _gan_section

    run = _tiny_run(tmp_path / "run", load_manifest(synth).classes)
    gen = export_generator(run, tmp_path / "g.safetensors", data_record(synth))
    compare = {"seeds": [0, 1], "classic_copies": 1, "per_class": 2, "feature_size": 32}
    summary = gan_stage(_ctx(tmp_path / "st", synth, {"generator": str(gen), "compare": compare}))
    assert (summary["arch"], summary["iterations"]) == ("cgan", 2)
    html = _gan_section(GanConfig().model_dump(), summary)
    assert html.count("<img") == 2  # the samples per class and the comparison plot
    assert "2 iterations on a CPU" in html and "real+classic+gan" in html and "95% CI" in html
    skipped = _gan_section(GanConfig().model_dump(), {"skipped": "the generator g was not used: why"})
    assert "Skipped: the generator g was not used: why" in skipped


def test_a_re_exported_generator_changes_the_gan_stages_key(tmp_path):
    from birdlens.study.config import parse_study_config
    from birdlens.study.pipeline import build_stages
    from birdlens.study.stages import stage_key

    gen = tmp_path / "g.safetensors"
    gen.write_bytes(b"one")
    data = {"gan": {"enabled": True, "generator": str(gen)}, "models": [{"name": "a", "model": "simple_cnn"}]}

    def key() -> str:
        (stage,) = [s for s in build_stages(parse_study_config(data)) if s.name == "gan"]
        return stage_key(stage, ["data-key"])

    first = key()
    assert key() == first
    gen.write_bytes(b"two")
    assert key() != first


def test_a_study_naming_a_missing_generator_fails_in_one_line_before_touching_the_run(tmp_path):
    from birdlens.cli import app

    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "gan: {enabled: true, generator: /nonexistent/g.safetensors}\nmodels: [{name: a, model: simple_cnn}]\n"
    )
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "no such file" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()
