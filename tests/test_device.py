"""``--device`` / ``--precision``: one resolver, clear errors (exit 2, nothing written), fp32 unchanged on the CPU.

There is no GPU here: CUDA and MPS are faked by monkeypatching ``torch.cuda`` / ``torch.backends.mps``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from birdlens.cli import app
from birdlens.utils.device import DeviceError, autocast, resolve_device, resolve_precision

runner = CliRunner()


def _returning(value: object, original: object) -> object:
    """A stand-in for a torch query that keeps ``__wrapped__``: torch._dynamo reads it on import, and a
    command under test may import it for the first time while the stand-in is in place."""

    def fake(*args: object, **kwargs: object) -> object:
        return value

    fake.__wrapped__ = getattr(original, "__wrapped__", original)  # type: ignore[attr-defined]
    return fake


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, n: int = 2, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", _returning(True, torch.cuda.is_available))
    monkeypatch.setattr(torch.cuda, "device_count", _returning(n, torch.cuda.device_count))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _returning(bf16, torch.cuda.is_bf16_supported))


def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", _returning(False, torch.cuda.is_available))
    monkeypatch.setattr(
        torch.backends.mps, "is_available", _returning(False, torch.backends.mps.is_available)
    )


def test_auto_is_cpu_without_a_gpu_and_cuda_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_gpu(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    _fake_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda:0")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("cuda", "--device cuda: not on this machine; available: cpu"),
        ("mps", "available: cpu"),
        ("tpu", "unknown"),
    ],
)
def test_a_missing_or_unknown_device_names_what_is_available(
    monkeypatch: pytest.MonkeyPatch, spec: str, needle: str
) -> None:
    _no_gpu(monkeypatch)
    with pytest.raises(DeviceError, match=needle):
        resolve_device(spec)


def test_a_cuda_index_past_the_last_gpu_lists_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, n=2)
    monkeypatch.setattr(
        torch.backends.mps, "is_available", _returning(False, torch.backends.mps.is_available)
    )
    with pytest.raises(DeviceError, match=r"--device cuda:2: .* available: cpu, cuda:0, cuda:1"):
        resolve_device("cuda:2")


def test_precisions_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision(None, cpu) == "fp32"
    assert resolve_precision("BF16", cpu) == "bf16"
    with pytest.raises(
        DeviceError, match="--precision fp16 is not supported on cpu; available there: fp32, bf16"
    ):
        resolve_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="unknown precision; choose one of fp32, bf16, fp16"):
        resolve_precision("int8", cpu)
    _fake_cuda(monkeypatch, bf16=False)
    assert resolve_precision("fp16", torch.device("cuda")) == "fp16"
    with pytest.raises(DeviceError, match="bf16 is not supported on cuda; available there: fp32, fp16"):
        resolve_precision("bf16", torch.device("cuda"))


def test_fp32_enters_no_autocast_and_bf16_does() -> None:
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")
        assert nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16


def _cli_cases(tmp: Path) -> dict[str, list[str]]:
    run = tmp / "run"
    run.mkdir()
    img = tmp / "a.png"
    img.write_bytes(b"not read")
    out = tmp / "out"
    return {
        "explain": ["explain", str(img), "--run", str(run), "--out", str(out)],
        "explain-eval": ["explain-eval", "--run", str(run), "--data", str(tmp), "--out", str(out)],
        "evaluate": ["evaluate", "--run", str(run)],
        "predict": ["predict", "--run", str(run), str(img)],
        "serve": ["serve", "--run", str(run)],
    }


@pytest.mark.parametrize("command", ["explain", "explain-eval", "evaluate", "predict", "serve"])
def test_every_command_refuses_a_missing_gpu_with_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    _no_gpu(monkeypatch)
    args = _cli_cases(tmp_path)[command]
    before = sorted(tmp_path.rglob("*"))
    res = runner.invoke(app, [*args, "--device", "cuda"])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == "error: --device cuda: not on this machine; available: cpu"
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("command", ["explain", "explain-eval"])
def test_a_precision_the_cpu_lacks_is_refused(tmp_path: Path, command: str) -> None:
    args = _cli_cases(tmp_path)[command]
    res = runner.invoke(app, [*args, "--device", "cpu", "--precision", "fp16"])
    assert res.exit_code == 2, res.output
    assert "error: --precision fp16 is not supported on cpu; available there: fp32, bf16" in res.output
    assert not (tmp_path / "out").exists()


def test_with_precision_reaches_only_the_methods_that_declare_it() -> None:
    from birdlens.explain.base import with_precision

    given = {"lime": {"num_samples": 10}, "shap": {"precision": "fp32"}}
    got = with_precision(given, ["gradcam", "lime", "shap"], "bf16")
    assert got == {"lime": {"num_samples": 10, "precision": "bf16"}, "shap": {"precision": "fp32"}}
    assert with_precision(given, ["lime"], "fp32") == given
    assert given["lime"] == {"num_samples": 10}  # the caller's dict is not changed


def test_a_method_refuses_a_device_it_cannot_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from birdlens.explain.base import UnsupportedMethodError, make_explainer, method_class

    lime = method_class("lime")
    assert "mps" not in lime.supports_device  # its segment means need float64 on the device
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    monkeypatch.setattr(lime, "supports_device", ("cuda",))
    with pytest.raises(UnsupportedMethodError, match="lime cannot run on cpu; it runs on cuda"):
        make_explainer("lime", model)


def test_deletion_curves_fp32_unchanged_and_bf16_close() -> None:
    from birdlens.explain.metrics.perturbation import perturbation_curves

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    ).eval()
    images, maps, targets = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16), torch.tensor([0, 3])
    plain = perturbation_curves(model, images, maps, targets, n_steps=8)
    fp32 = perturbation_curves(model, images, maps, targets, n_steps=8, precision="fp32")
    bf16 = perturbation_curves(model, images, maps, targets, n_steps=8, precision="bf16")
    for mode in ("deletion", "insertion"):
        assert (plain[mode].probs == fp32[mode].probs).all()
        assert abs(bf16[mode].probs - fp32[mode].probs).max() < 0.05
        assert (bf16[mode].probs != fp32[mode].probs).any()  # autocast did run


def test_study_config_checks_the_device_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from birdlens.study.config import ConfigError, parse_study_config

    _no_gpu(monkeypatch)
    models = [{"name": "a", "model": "simple_cnn"}]
    assert parse_study_config({"models": models}).device == "auto"
    with pytest.raises(
        ConfigError, match=r"device: got .cuda. — --device cuda: not on this machine; available: cpu"
    ):
        parse_study_config({"models": models, "device": "cuda"})
    with pytest.raises(
        ConfigError, match=r"precision: got .fp16. — --precision fp16 is not supported on cpu"
    ):
        parse_study_config({"models": models, "precision": "fp16"})


def test_explain_cli_loads_on_the_device_and_passes_the_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import birdlens.runs.trained as checkpoint
    from test_explain_run import photos, tiny_trained

    asked: list[object] = []

    def load(run: Path, which: str = "best", device: object = "cpu") -> object:
        asked.append(device)
        return tiny_trained()

    monkeypatch.setattr(checkpoint, "load_trained", load)
    out = tmp_path / "out"
    args = ["explain", photos(tmp_path)[0], "--run", str(tmp_path), "--out", str(out), "--quiet"]
    res = runner.invoke(
        app, [*args, "--methods", "gradcam,lime", "--lime-samples", "20", "--precision", "bf16"]
    )
    assert res.exit_code == 0, res.output
    assert asked == [torch.device("cpu")]  # auto on a machine without a GPU
    man = json.loads((out / "manifest.json").read_text())
    assert man["methods"]["lime"]["params"]["precision"] == "bf16"
    assert "precision" not in man["methods"]["gradcam"]["params"]  # a gradient method keeps fp32


def test_study_stages_carry_device_and_precision_only_when_set() -> None:
    from birdlens.study.config import parse_study_config
    from birdlens.study.pipeline import build_stages

    models = [{"name": "a", "model": "simple_cnn"}]
    plain = {s.name: s.config for s in build_stages(parse_study_config({"models": models}))}
    assert not any("device" in c or "precision" in c for c in plain.values())  # older stage keys stay valid
    bf16 = {
        s.name: s.config for s in build_stages(parse_study_config({"models": models, "precision": "bf16"}))
    }
    assert bf16["explain:a"]["precision"] == bf16["explain_eval:a"]["precision"] == "bf16"
    assert "precision" not in bf16["evaluate:a"] and "precision" not in bf16["model:a"]
    cpu = {s.name: s.config for s in build_stages(parse_study_config({"models": models, "device": "cpu"}))}
    assert cpu["evaluate:a"]["device"] == cpu["explain:a"]["device"] == "cpu"
