"""Run artefacts: the run-directory layout and file names, :func:`prepare_run_dir`, and trained-model loading.

A neutral home below training and evaluation: every stage that writes or reads a run (train, evaluate, explain,
the app, the study) uses this package, so none of them needs another's internals.
"""

from birdlens.utils.lazy import lazy_exports

# Lazy exports: ``birdlens --help`` must not pay for importing torch (docs/benchmarks.md#cli-start-up).
_LAZY = {
    "CheckpointError": "birdlens.runs.layout",
    "RunDirError": "birdlens.runs.layout",
    "prepare_run_dir": "birdlens.runs.layout",
    "TrainedModel": "birdlens.runs.trained",
    "load_trained": "birdlens.runs.trained",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
