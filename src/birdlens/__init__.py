"""birdlens: interpretable image classification, from a folder of photos to a readable report."""

__version__ = "0.1.0"
