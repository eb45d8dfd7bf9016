"""Peak memory of one explanation at the largest parameters a web request may set.

Why: the per-request ranges declared on the explainer classes (``birdlens.explain.base.Param``) are what keeps
one ``/api/explain`` request from exhausting the server; this measures what the largest allowed request costs.
Usage: ``python benchmarks/explain_request_memory.py METHOD '{"param": value, ...}'`` (one process per run,
so the peak RSS is that request's). Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import torch

from birdlens.explain.base import UnsupportedMethodError, make_explainer, validate_params
from birdlens.models import create_model


def main() -> None:
    torch.set_num_threads(1)
    method, params = sys.argv[1], json.loads(sys.argv[2])
    model = create_model("tf_efficientnet_lite0", num_classes=20, pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3, "model_name": "tf_efficientnet_lite0"}
    try:
        make_explainer(method, model, **norm, **validate_params(method, params)).explain(x)
    except UnsupportedMethodError as e:  # LRP on Lite0: what the web app answers too
        print(f"{method} {params}: refused on tf_efficientnet_lite0: {e}")
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{method} {params}: peak RSS {peak:.0f} MB ({before:.0f} MB before), {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
