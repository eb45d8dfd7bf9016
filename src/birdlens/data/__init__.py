"""Turn whatever a user has on disk into one :class:`~birdlens.data.manifest.Manifest`."""

from birdlens.data.manifest import SPLITS, Manifest, Record, normalise_label, normalise_split
from birdlens.utils.lazy import lazy_exports

__all__ = [
    "SPLITS",
    "BadImage",
    "ImageCache",
    "ImageDataset",
    "Manifest",
    "Record",
    "build_data_report",
    "discover",
    "load_manifest",
    "load_rgb",
    "normalise_label",
    "normalise_split",
    "prepare_dataset",
    "scan_data",
    "validate_manifest",
]

# Lazy exports: ``import birdlens.data`` stays cheap (no torch) for the CLI; the name loads its module on use.
_LAZY = {
    "BadImage": "birdlens.data.images",
    "load_rgb": "birdlens.data.images",
    "ImageCache": "birdlens.data.cache",
    "ImageDataset": "birdlens.data.dataset",
    "discover": "birdlens.data.layouts",
    "load_manifest": "birdlens.data.layouts",
    "build_data_report": "birdlens.data.report",
    "scan_data": "birdlens.data.report",
    "validate_manifest": "birdlens.data.validate",
    "prepare_dataset": "birdlens.data.prepare",
}


__getattr__, _ = lazy_exports(__name__, _LAZY)
