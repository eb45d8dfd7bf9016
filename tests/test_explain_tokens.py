"""CAMs on token models (issue 23): ViT, DeiT (distillation token), a ViT with register tokens, EVA, Swin.

Random-init timm models at small image sizes (offline, fast); the reference is pytorch-grad-cam with the
matching ``reshape_transform`` on the same layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from _trainutil import make_image_folder
from birdlens.cli import app
from birdlens.explain import make_explainer
from birdlens.explain.hooks import count_hooks
from birdlens.explain.tokens import LayoutError
from birdlens.models import create_model, get_model_info

timm = pytest.importorskip("timm")
pytest.importorskip("pytorch_grad_cam")

CAMS = ["gradcam", "gradcam++", "layercam", "hirescam"]
#: name -> (timm kwargs, default layer, prefix tokens, grid)
MODELS = {
    "vit_tiny_patch16_224": ({"img_size": 64}, "blocks.11.norm1", 1, [4, 4]),
    "deit_tiny_distilled_patch16_224": ({"img_size": 64}, "blocks.11.norm1", 2, [4, 4]),
    "vit_small_patch14_reg4_dinov2": ({"img_size": 56}, "blocks.11.norm1", 5, [4, 4]),
    "eva02_tiny_patch14_224": ({"img_size": 56}, "blocks.11.norm1", 1, [4, 4]),
    "swin_tiny_patch4_window7_224": (
        {"img_size": 128, "window_size": 4},
        "layers.3.blocks.1.norm2",
        0,
        [4, 4],
    ),
}


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    out = {}
    for name, (kw, *_rest) in MODELS.items():
        torch.manual_seed(0)
        out[name] = timm.create_model(name, pretrained=False, num_classes=5, **kw).eval()
    return out


def _images(model: nn.Module, n: int = 2) -> torch.Tensor:
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    size = int(getattr(model.patch_embed, "img_size", (size, size))[0])
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _reference(method: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, target: list[int], fold):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
           "hirescam": pgc.HiResCAM}[method]  # fmt: skip
    with cls(model=model, target_layers=[layer], reshape_transform=fold) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target])


def _tokens(prefix: int, h: int, w: int):
    """pytorch-grad-cam's ViT/Swin ``reshape_transform`` (its docs' example, prefix generalised)."""

    def fold(t: torch.Tensor) -> torch.Tensor:
        return t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).transpose(2, 3).transpose(1, 2)

    return fold


@pytest.mark.parametrize("name", list(MODELS))
def test_cams_on_token_models_equal_pytorch_grad_cam(name: str, built: dict[str, nn.Module]) -> None:
    model = built[name]
    _kw, layer_path, prefix, grid = MODELS[name]
    x = _images(model)
    hooks = count_hooks(model)
    for method in CAMS:
        ours = make_explainer(method, model, channels_last=False).explain(x)
        p = ours.params
        assert (p["layer"], p["layer_choice"]) == (layer_path, "registry")
        assert (p["layout"], p["prefix_tokens"], p["grid"]) == ("tokens", prefix, grid)
        assert ours.maps.shape == (2, x.shape[2], x.shape[3])
        ref = _reference(method, model, model.get_submodule(layer_path), x, ours.target.tolist(),
                         _tokens(prefix, *grid))  # fmt: skip
        assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5, method
    assert count_hooks(model) == hooks


def test_swin_stage_output_is_read_channels_last(built: dict[str, nn.Module]) -> None:
    """``layers.3`` returns [B, H, W, C]; the model says so (``output_fmt``), and the map is the NHWC one.

    HiResCAM is compared at the final ``norm`` (a LayerNorm: channels-last by its type): at ``layers.3`` of a
    random-init Swin its signed channel sum cancels to ~1e-7, float32 rounding level, where any two summation
    orders (ours, pytorch-grad-cam's numpy) differ by ~1e-2 after min-max; the positive-weight CAMs do not.
    """
    model = built["swin_tiny_patch4_window7_224"]
    x = _images(model)
    for method, path in [*((m, "layers.3") for m in CAMS[:3]), ("hirescam", "norm"), ("gradcam", "norm")]:
        ours = make_explainer(method, model, layer=path, channels_last=False).explain(x)
        assert ours.params["layout"] == "nhwc" and "grid" not in ours.params
        ref = _reference(method, model, model.get_submodule(path), x, ours.target.tolist(),
                         lambda t: t.permute(0, 3, 1, 2))  # fmt: skip
        assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5, (method, path)
    # the patch embedding's conv is channels-first even inside a channels-last model
    conv = make_explainer("gradcam", model, layer="patch_embed.proj", channels_last=False).explain(x)
    assert conv.params["layout"] == "nchw"


def test_channels_last_layers_inside_a_convnext_block_are_read_by_their_type() -> None:
    """ConvNeXt's block norm (a LayerNorm) and MLP run on [B, H, W, C] unless ``conv_mlp``, where the norm is
    timm's LayerNorm2d (a LayerNorm subclass on [B, C, h, w]); its stages are [B, C, h, w] either way."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cases = {
        False: (("stages.3.blocks.1.norm", "nhwc"), ("stages.3.blocks.1.mlp", "nhwc"), ("stages.3", "nchw")),
        True: (("stages.3.blocks.1.norm", "nchw"), ("stages.3.blocks.1.mlp", "nchw")),
    }
    for conv_mlp, layers in cases.items():
        torch.manual_seed(0)
        model = timm.create_model("convnext_atto", pretrained=False, num_classes=4, conv_mlp=conv_mlp).eval()
        for path, layout in layers:
            ours = make_explainer("gradcam", model, layer=path, channels_last=False).explain(x)
            assert ours.params["layout"] == layout, (conv_mlp, path)
            fold = (lambda t: t.permute(0, 3, 1, 2)) if layout == "nhwc" else None
            ref = _reference("gradcam", model, model.get_submodule(path), x, ours.target.tolist(), fold)
            assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5, (conv_mlp, path)


def test_a_vit_at_another_image_size_folds_on_its_dynamic_grid() -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, dynamic_img_size=True)
    x = torch.randn(1, 3, 48, 80)
    ours = make_explainer("gradcam", model.eval(), channels_last=False).explain(x)
    assert ours.params["grid"] == [3, 5] and ours.maps.shape == (1, 48, 80)
    ref = _reference("gradcam", model, model.blocks[11].norm1, x, ours.target.tolist(), _tokens(1, 3, 5))
    assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5


def test_registry_swin_and_vit_run_and_explain_at_a_small_image_size() -> None:
    """Built by the registry, Swin (windows padded) and DeiT (position embedding resampled) take 64 px."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for name, prefix, grid in (
        ("swin_tiny_patch4_window7_224", 0, [2, 2]),
        ("deit_tiny_distilled_patch16_224", 2, [4, 4]),
    ):
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, pretrained=False).eval()
        ours = make_explainer("gradcam", model, channels_last=False).explain(x)
        assert (ours.params["prefix_tokens"], ours.params["grid"]) == (prefix, grid), name
        layer = model.get_submodule(ours.params["layer"])
        ref = _reference("gradcam", model, layer, x, ours.target.tolist(), _tokens(prefix, *grid))
        assert np.abs(ours.maps.numpy() - ref).max() <= 1e-5, name


def test_layers_that_are_no_spatial_map_are_refused_with_what_to_pass(built: dict[str, nn.Module]) -> None:
    vit, swin = built["vit_tiny_patch16_224"], built["swin_tiny_patch4_window7_224"]
    with pytest.raises(LayoutError) as e:
        make_explainer("gradcam", vit, layer="head").explain(_images(vit))
    msg = str(e.value)
    assert "'head'" in msg and "[2x5]" in msg and "'blocks.11.norm1'" in msg
    # Swin's window attention returns [B * windows, N, C]: no batch dimension to map back
    with pytest.raises(LayoutError, match=r"'layers.2.blocks.1.attn'.*\[8x16x384\].*not the batch"):
        make_explainer("gradcam", swin, layer="layers.2.blocks.1.attn").explain(_images(swin))
    # the last block's output reaches the class-token head only through the class token: a blank map, refused
    with pytest.raises(LayoutError, match=r"'blocks.11' gets no gradient at its patch tokens.*norm1"):
        make_explainer("gradcam", vit, layer="blocks.11").explain(_images(vit))
    with pytest.raises(ValueError, match=r"no layer 'blocks.11.norm'.*candidates: .*blocks.11.norm1"):
        make_explainer("gradcam", vit, layer="blocks.11.norm").explain(_images(vit))


def test_a_token_model_without_a_patch_grid_is_refused() -> None:
    class Tokens(nn.Module):  # [B, N, C] with nothing saying how the tokens lie
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(3, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.embed(x.flatten(2).transpose(1, 2))
            return self.head(t.mean(1))

    with pytest.raises(LayoutError, match=r"'embed'.*\[1x16x8\].*no patch grid"):
        make_explainer("gradcam", Tokens(), layer="embed").explain(torch.rand(1, 3, 4, 4))


def test_registry_names_the_family_default_layers() -> None:
    for name, (_kw, layer, *_rest) in MODELS.items():
        assert get_model_info(name).cam_layer == layer, name
    assert get_model_info("resnet50").cam_layer == "layer4"  # convolutional entries unchanged


def test_hub_weights_of_a_vit_load_from_a_local_stand_in_and_explain(tmp_path: Path, monkeypatch) -> None:
    import birdlens.models.registry as registry

    torch.manual_seed(0)
    src = create_model("vit_tiny_patch16_224", pretrained=False).eval()
    cached = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(cached))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(registry, "hub_cached_file", lambda hub_id: cached)
    m = create_model("vit_tiny_patch16_224", num_classes=3).eval()  # pretrained=True: the "hub" file
    assert get_model_info(m).weights == f"hf-cache:{cached}"
    with torch.no_grad():
        assert torch.equal(
            m.forward_features(torch.ones(1, 3, 64, 64)), src.forward_features(torch.ones(1, 3, 64, 64))
        )
    exp = make_explainer("gradcam", m).explain(torch.rand(1, 3, 64, 64))
    assert exp.params["layer"] == "blocks.11.norm1" and exp.params["grid"] == [4, 4]


def test_probe_and_finetune_on_a_random_vit_then_explain_with_layer(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "birds", train=4, valid=1, test=1)
    cli = CliRunner()
    run = tmp_path / "run"
    res = cli.invoke(app, ["train", "--data", str(data), "--out", str(run), "--model", "vit_tiny_patch16_224",
                           "--mode", "probe", "--image-size", "32", "--no-pretrained", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    base = ["explain", str(data / "test"), "--run", str(run), "--methods", "gradcam,lime", "--quiet",
            "--lime-samples", "20"]  # fmt: skip
    res = cli.invoke(app, [*base, "--out", str(tmp_path / "ex"), "--layer", "blocks.5.norm1"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    assert manifest["methods"]["gradcam"]["params"]["layer"] == "blocks.5.norm1"
    assert manifest["methods"]["gradcam"]["params"]["grid"] == [2, 2]
    for layer, words in (("blocks.5.norm", "candidates"), ("head", "cannot use layer 'head'")):
        res = cli.invoke(app, [*base, "--out", str(tmp_path / layer), "--layer", layer])
        assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output
        assert not (tmp_path / layer).exists()

    res = cli.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "ft"), "--model",
                           "vit_tiny_patch16_224", "--mode", "finetune", "--epochs", "1", "--image-size", "32",
                           "--no-pretrained", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ft" / "meta.json").read_text())["cam_layer"] == "blocks.11.norm1"
    ev = ["explain-eval", "--run", str(run), "--data", str(data), "--methods", "gradcam", "--n", "3", "--steps", "4",
          "--sanity-n", "0", "--stability-n", "0", "-q"]  # fmt: skip
    res = cli.invoke(app, [*ev, "--out", str(tmp_path / "ee"), "--layer", "blocks.5.norm1"])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, [*ev, "--out", str(tmp_path / "ee_bad"), "--layer", "nope"])
    assert (
        res.exit_code == 2
        and "no layer 'nope'" in res.output
        and "default CAM layer is 'blocks.11.norm1'" in res.output
    )
    assert not (tmp_path / "ee_bad").exists()


def test_study_config_layer_reaches_the_explain_stages_and_old_keys_stay() -> None:
    from birdlens.study.config import parse_study_config
    from birdlens.study.pipeline import build_stages

    models = [{"name": "vit", "model": "vit_tiny_patch16_224"}]
    plain = {s.name: s for s in build_stages(parse_study_config({"models": models}))}
    assert "layer" not in plain["explain:vit"].config and "layer" not in plain["explain_eval:vit"].config
    cfg = parse_study_config(
        {
            "models": models,
            "explain": {"layer": "blocks.5.norm1"},
            "explain_eval": {"layer": "blocks.4.norm1"},
        }
    )
    stages = {s.name: s for s in build_stages(cfg)}
    assert stages["explain:vit"].config["layer"] == "blocks.5.norm1"
    assert stages["explain_eval:vit"].config["layer"] == "blocks.4.norm1"
