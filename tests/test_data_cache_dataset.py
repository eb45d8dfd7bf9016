"""Decoded-image cache (content keys, memory maps, concurrent fill) and the torch ImageDataset."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from _data_helpers import make_split_tree, save_image
from birdlens.data.cache import ImageCache
from birdlens.data.dataset import ImageDataset
from birdlens.data.images import BadImage, load_resized
from birdlens.data.layouts import load_manifest
from birdlens.data.manifest import Manifest, Record


def test_cache_hit_returns_identical_bytes_and_is_memory_mapped(tmp_path: Path) -> None:
    img = save_image(tmp_path / "a.jpg", 1, (90, 60))
    cache = ImageCache(tmp_path / "cache")
    first = np.array(cache.load(img, 32))
    second = cache.load(img, 32)
    assert (cache.misses, cache.hits) == (1, 1)
    assert isinstance(second.base, memoryview) or not second.flags.owndata  # a view on the mapped file
    assert not second.flags.writeable
    assert second.shape == (32, 32, 3) and second.dtype == np.uint8
    assert first.tobytes() == second.tobytes()
    assert first.tobytes() == np.asarray(load_resized(img, 32)).tobytes()  # same pixels as decoding directly
    # keyed by content: a renamed copy hits, an edited file misses, another size is another entry
    shutil.copy(img, tmp_path / "renamed.jpg")
    cache.load(tmp_path / "renamed.jpg", 32)
    assert cache.hits == 2
    cache.load(img, None)
    assert cache.misses == 2
    save_image(img, 2, (90, 60))  # same path, new content
    assert cache.load(img, 32).tobytes() != first.tobytes()
    assert cache.misses == 3


def test_corrupt_cache_entry_is_a_miss_and_bad_images_raise(tmp_path: Path) -> None:
    img = save_image(tmp_path / "a.png", 1)
    cache = ImageCache(tmp_path / "cache")
    good = np.array(cache.load(img))
    entry = cache.array_path(cache.file_key(img))
    entry.write_bytes(entry.read_bytes()[:100])  # truncated by a crash
    again = ImageCache(tmp_path / "cache").load(img)
    assert again.tobytes() == good.tobytes()
    (tmp_path / "bad.jpg").write_text("nope")
    with pytest.raises(BadImage, match="not an image"):
        cache.load(tmp_path / "bad.jpg")


_FILL = """
import sys
from pathlib import Path
from birdlens.data.cache import ImageCache
c = ImageCache(sys.argv[1])
for p in sorted(Path(sys.argv[2]).glob("*.png")):
    c.load(p, 24)
"""


def test_two_processes_fill_one_cache_safely(tmp_path: Path) -> None:
    for i in range(30):
        save_image(tmp_path / "img" / f"{i:02d}.png", i, (50, 40))
    cmd = [sys.executable, "-c", _FILL, str(tmp_path / "cache"), str(tmp_path / "img")]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    cache = ImageCache(tmp_path / "cache")
    for p in sorted((tmp_path / "img").glob("*.png")):
        arr = cache.get(cache.file_key(p), 24)
        assert arr is not None and arr.tobytes() == np.asarray(load_resized(p, 24)).tobytes()
    assert not list((tmp_path / "cache").rglob("*.tmp*")) and not list((tmp_path / "cache").rglob(".*.npy"))


def test_image_dataset_items_targets_transform_and_cache(tmp_path: Path) -> None:
    root = make_split_tree(
        tmp_path / "ds", {"A": {"train": 3, "test": 1}, "B": {"train": 2, "test": 1}}, size=(70, 50)
    )
    m = load_manifest(root)
    test_only = m.split("test").filter(labels=["B"])
    ds = ImageDataset(test_only, class_to_idx=m.class_to_idx)
    img, target = ds[0]
    assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8 and img.shape == (3, 50, 70)
    assert target == 1 and ds.classes == ["A", "B"]  # B keeps its full-manifest index
    with pytest.raises(ValueError, match="class_to_idx lacks"):
        ImageDataset(m, class_to_idx={"A": 0})

    cached = ImageDataset(
        m.split("train"),
        cache=tmp_path / "cache",
        size=32,
        transform=v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True)]),
    )
    x, _ = cached[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and float(x.max()) <= 1.0
    plain = ImageDataset(m.split("train"), size=32)
    assert torch.equal(plain[0][0].flip(-1).contiguous(), (x * 255).round().to(torch.uint8))
    for i in range(len(cached)):
        cached[i]
    assert cached.cache is not None and cached.cache.hits == 1 and cached.cache.misses == len(cached)
    batch = torch.utils.data.default_collate([plain[i] for i in range(len(plain))])
    assert batch[0].shape == (5, 3, 32, 32) and batch[1].tolist() == plain.targets


def test_dataset_masks_follow_the_resize(tmp_path: Path) -> None:
    from PIL import Image

    img = save_image(tmp_path / "i.png", 1, (80, 40))
    mask_arr = np.zeros((40, 80), np.uint8)
    mask_arr[:, 40:] = 3  # right half is part 3
    Image.fromarray(mask_arr).save(tmp_path / "m.png")
    ds = ImageDataset(Manifest([Record(img, "A", "train", mask=tmp_path / "m.png")]), size=20)
    m = ds.load_mask(0)
    assert m is not None and m.shape == (20, 20) and set(np.unique(m)) == {0, 3}
    assert (m[:, :10] == 0).all() and (m[:, 10:] == 3).all()  # centre crop keeps x in [20, 60)


def test_validation_reuses_cached_verdicts(tmp_path: Path) -> None:
    from birdlens.data.images import ImageLimits
    from birdlens.data.validate import validate_manifest

    root = make_split_tree(tmp_path / "ds", {"A": {"train": 3}, "B": {"train": 3}}, size=(64, 48))
    (root / "train" / "A" / "bad.jpg").write_text("nope")
    m = load_manifest(root)
    first = validate_manifest(m, cache=tmp_path / "cache")
    again = validate_manifest(m, cache=tmp_path / "cache")
    assert (first.from_cache, again.from_cache) == (0, 6)
    assert again.infos == first.infos and [s.reason for s in again.skipped] == [
        s.reason for s in first.skipped
    ]
    # limits are re-checked against the cached size: a stricter minimum rejects them without a decode
    strict = validate_manifest(m, ImageLimits(min_side=50), cache=tmp_path / "cache")
    reasons = sorted(s.reason.split(" (")[0] for s in strict.skipped)
    assert len(strict.manifest) == 0 and reasons == ["not an image"] + ["too small"] * 6
