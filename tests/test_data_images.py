"""Image decoding: the RGB rule for every Pillow mode, EXIF, animations, and the bad-file corpus."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _data_helpers import forged_png, jpeg_bytes, make_split_tree, save_image
from birdlens.data.images import (
    GREY_BACKGROUND,
    BadImage,
    ImageLimits,
    is_image_candidate,
    load_rgb,
    resize_center_crop,
    to_rgb,
    transform_box,
)
from birdlens.data.layouts import discover
from birdlens.data.validate import validate_manifest


def _roundtrip(img: Image.Image, tmp_path: Path, name: str, fmt: str = "PNG", **kw: object) -> Image.Image:
    p = tmp_path / name
    img.save(p, fmt, **kw)
    out = load_rgb(p)
    assert out.mode == "RGB"
    return out


@pytest.mark.parametrize(
    "mode", ["1", "L", "P", "RGB", "CMYK", "YCbCr", "I", "F", "I;16", "LA", "RGBA", "PA", "La", "RGBa"]
)
def test_every_mode_becomes_rgb_of_same_size(mode: str) -> None:
    base = Image.new("RGB", (40, 30), (200, 100, 50))
    img = base.convert(mode) if mode not in ("I;16", "PA", "La", "RGBa") else None
    if mode == "I;16":
        img = Image.fromarray(np.full((30, 40), 257 * 100, dtype=np.uint16))
    elif mode == "PA":
        img = base.convert("P").convert("PA")
    elif mode in ("La", "RGBa"):
        img = base.convert(mode[:-1] + "A").convert(mode)
    rgb = to_rgb(img)
    assert rgb.mode == "RGB" and rgb.size == (40, 30)


def test_alpha_is_composited_on_neutral_grey(tmp_path: Path) -> None:
    a = np.zeros((32, 32, 4), dtype=np.uint8)
    a[:, :16] = (255, 0, 0, 0)  # fully transparent red: background shows
    a[:, 16:] = (255, 0, 0, 255)  # opaque red
    out = np.asarray(_roundtrip(Image.fromarray(a), tmp_path, "rgba.png"))
    assert tuple(out[0, 0]) == GREY_BACKGROUND
    assert tuple(out[0, 31]) == (255, 0, 0)
    # half transparent: halfway between red and grey
    a[:] = (255, 0, 0, 128)
    out = np.asarray(_roundtrip(Image.fromarray(a), tmp_path, "half.png"))
    assert np.allclose(out[0, 0], (191.5, 63.7, 63.7), atol=2)
    # LA and P with a transparent index follow the same rule
    la = Image.fromarray(np.stack([np.full((32, 32), 10, np.uint8), np.zeros((32, 32), np.uint8)], -1))
    assert tuple(np.asarray(_roundtrip(la, tmp_path, "la.png"))[5, 5]) == GREY_BACKGROUND
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0] * 256)
    p.info["transparency"] = 0
    assert tuple(np.asarray(_roundtrip(p, tmp_path, "p.png", transparency=0))[3, 3]) == GREY_BACKGROUND


def test_high_bit_depth_scaling(tmp_path: Path) -> None:
    i16 = Image.fromarray(np.array([[0, 257 * 100, 65535] * 12] * 36, dtype=np.uint16))
    out = np.asarray(_roundtrip(i16, tmp_path, "i16.png"))
    assert list(out[0, :3, 0]) == [0, 100, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0] * 12] * 36, dtype=np.float32))
    assert list(np.asarray(to_rgb(f))[0, :3, 1]) == [0, 128, 255]
    wide = Image.fromarray(np.array([[-1000, 0, 1000] * 12] * 36, dtype=np.int32))
    assert list(np.asarray(to_rgb(wide))[0, :3, 2]) == [0, 128, 255]  # min-max rescaled


def test_cmyk_jpeg_and_one_bit(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # pure red in naive CMYK
    assert tuple(
        np.asarray(_roundtrip(cmyk, tmp_path, "c.jpg", "JPEG", quality=95))[20, 20]
    ) == pytest.approx((255, 0, 0), abs=6)
    one = Image.new("1", (40, 40), 1)
    assert tuple(np.asarray(_roundtrip(one, tmp_path, "one.png"))[0, 0]) == (255, 255, 255)


def test_exif_orientation_and_first_frame(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 40), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", "JPEG", exif=exif.tobytes())
    assert load_rgb(tmp_path / "rot.jpg").size == (40, 60)
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    px = np.asarray(load_rgb(tmp_path / "anim.gif"))[5, 5]
    assert px[0] > 200 and px[2] < 50


def test_resize_center_crop_and_box() -> None:
    img = Image.new("RGB", (400, 200))
    assert resize_center_crop(img, 224).size == (224, 224)
    # a box on the right half of a 400x200 image: crop keeps x in [100, 300], scale 224/200
    assert transform_box((150, 50, 100, 100), 400, 200, 224) == (56.0, 56.0, 112.0, 112.0)
    assert transform_box((0, 0, 50, 50), 400, 200, 224) is None  # entirely cropped away
    assert transform_box((250, 0, 100, 200), 400, 200, 224) == (168.0, 0.0, 56.0, 224.0)  # clipped


def test_bomb_is_rejected_from_the_header_without_allocating(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    p.write_bytes(forged_png(100_000, 100_000))  # 10 Gpx declared, 100 bytes on disk
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(p)
    p2 = tmp_path / "just_over.png"
    p2.write_bytes(forged_png(10_000, 9_000))  # 90 Mpx: Pillow only *warns*; still a bomb for us
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(p2)
    save_image(tmp_path / "real.png", 1, (200, 200))
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(tmp_path / "real.png", ImageLimits(max_pixels=10_000))
    with pytest.raises(BadImage, match="file too large"):  # never read whole: e.g. a video named .jpg
        load_rgb(tmp_path / "real.png", ImageLimits(max_bytes=100))


def _bad_corpus(folder: Path) -> dict[str, str]:
    """Write every kind of bad file next to good ones; return name -> expected reason fragment."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(7, (80, 80))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    png = io.BytesIO()
    Image.new("RGB", (80, 80), (1, 2, 3)).save(png, "PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[:-40])
    (folder / "text.jpg").write_text("this is not a picture\n")
    (folder / "folder.jpg").mkdir()
    os.symlink(folder / "does-not-exist.jpg", folder / "dangling.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    save_image(folder / "tiny.png", 3, (20, 20))
    save_image(folder / "skinny.png", 4, (660, 33))
    (folder / "bomb.png").write_bytes(forged_png(100_000, 100_000))
    (folder / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    return {
        "IMG_0001.HEIC": "unsupported format .heic",
        "empty.jpg": "empty",
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "text.jpg": "not an image",
        "folder.jpg": "directory",
        "dangling.jpg": "dangling",
        "loop.jpg": "loop",
        "tiny.png": "too small",
        "skinny.png": "aspect ratio",
        "bomb.png": "bomb",
    }


def test_bad_files_are_skipped_with_reasons_and_good_ones_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_split_tree(
        tmp_path / "ds",
        {"ROBIN": {"train": 3, "valid": 1, "test": 1}, "WREN": {"train": 3, "valid": 1, "test": 1}},
    )
    folder = root / "train" / "ROBIN"
    expected = _bad_corpus(folder)
    # good files with awkward names, and files that must be ignored silently
    save_image(folder / "mésange_é 1.JPG", 11, (64, 64), fmt="JPEG")
    save_image(folder / "UPPER.PNG", 12, (64, 64))
    for junk in (".DS_Store", "Thumbs.db", "._001.jpg", "notes.txt", "labels.json"):
        (folder / junk).write_bytes(b"\x00junk")
    d = discover(root)
    res = validate_manifest(d.manifest)
    reasons = {Path(s.path).name: s.reason for s in res.skipped}
    assert set(reasons) == set(expected), reasons
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])
    kept = {r.path.name for r in res.manifest.split("train").filter(labels=["ROBIN"])}
    assert kept == {"000.jpg", "001.jpg", "002.jpg", "mésange_é 1.JPG", "UPPER.PNG"}
    assert len(res.manifest) == 10 + 2
    threaded = validate_manifest(d.manifest, workers=2)  # same verdicts, same order, with a thread pool
    assert [(s.path, s.reason) for s in threaded.skipped] == [(s.path, s.reason) for s in res.skipped]
    assert threaded.infos == res.infos
    ignored = {".DS_Store", "Thumbs.db", "._001.jpg", "notes.txt", "labels.json"}
    assert not ignored & {r.path.name for r in d.manifest}
    assert "Traceback" not in capsys.readouterr().err


def test_is_image_candidate() -> None:
    assert is_image_candidate("a.JPG") and is_image_candidate("ü.webp")
    assert not is_image_candidate(".hidden.jpg") and not is_image_candidate("._a.jpg")
    assert not is_image_candidate("Thumbs.db") and not is_image_candidate("a.txt")
