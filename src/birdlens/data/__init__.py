"""Turn whatever a user has on disk into one :class:`~birdlens.data.manifest.Manifest`."""

from birdlens.data.manifest import SPLITS, Manifest, Record, normalise_label, normalise_split

__all__ = ["SPLITS", "Manifest", "Record", "normalise_label", "normalise_split"]
