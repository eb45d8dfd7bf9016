"""Schema-driven fuzzing of ``birdlens serve`` with schemathesis: no request the schema allows (or breaks)
may get a 5xx, and none may hang (issue 26).

The server is a real uvicorn on 127.0.0.1 (a free port), around the tiny 3-colour run, with a small
per-request budget so every generated explanation is fast. Its own OpenAPI schema drives the requests, in
both of schemathesis' modes: valid requests and requests that break the schema. Schemathesis cannot make a
usable photo or the JSON inside the ``params`` form field, so a second test sends real photos with
hypothesis-made ``params``. Examples are bounded and derandomised: a run is repeatable and takes well
under a minute on one thread. A request that does not answer within ``REQUEST_TIMEOUT_S`` fails the test.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")
pytest.importorskip("uvicorn")
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from _apputil import COLOURS, encode, make_tiny_run, noisy
from birdlens.app.budget import Budget, offered_methods
from birdlens.app.examples import find_examples
from birdlens.app.server import create_app
from birdlens.app.service import ModelService
from birdlens.explain import method_class

EXAMPLES_PER_OPERATION = 30
PARAMS_EXAMPLES = 50
REQUEST_TIMEOUT_S = 60.0  # the server's own time budget below is far shorter: past this, it hung
BUDGET = Budget(
    lime_max_samples=24,
    shap_max_evals=24,
    ig_max_steps=4,
    rise_max_masks=24,
    smoothgrad_max_samples=4,
    timeout_s=20.0,
)


def bounded(max_examples: int) -> settings:
    """Repeatable (derandomised, no example database) and bounded; no per-example deadline (shared CPU)."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


STATUSES: Counter[str] = Counter()  # "<test> <status>" -> count, printed at the end (docs/benchmarks.md)
MEMORY: dict[str, int] = {}  # resident memory of this process (server included) when the server started
MAX_GROWTH_MIB = 512  # the tiny run's worst request (a budget-capped SHAP/LIME/IG on 96 px) needs far less


def _status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Start the peak-memory count (``VmHWM``) afresh from now (Linux: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run = make_tiny_run(tmp_path_factory.mktemp("app_fuzz"))
    app = create_app(ModelService.from_run(run, budget=BUDGET), find_examples(run))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    if _reset_peak():
        MEMORY["start"] = _status_kib("VmRSS")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    print(f"\nrequests by test and status: {dict(sorted(STATUSES.items()))}")


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_schema_generated_request_gets_a_5xx_or_hangs(server_url: str, mode: str) -> None:
    """Every operation of the schema, ``EXAMPLES_PER_OPERATION`` cases each, in one generation mode."""
    api = schemathesis.openapi.from_url(f"{server_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 9  # the page's whole API is in the schema
    fuzzed: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        @bounded(EXAMPLES_PER_OPERATION)
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=server_url, timeout=REQUEST_TIMEOUT_S)
            STATUSES[f"{mode} {response.status_code}"] += 1
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:  # negative mode: nothing in this operation's inputs can be broken
            if mode == "positive":
                raise
        else:
            fuzzed.append(operation.label)
    print(f"\n{mode}: fuzzed {fuzzed}")
    for label in ("POST /api/predict", "POST /api/explain", "POST /api/tasks"):
        assert label in fuzzed


def _param_names(server_url: str) -> dict[str, list[str]]:
    """Per method: the parameters the server declares (``/api/info``) and its budget one (plus a seed)."""
    info = requests.get(f"{server_url}/api/info", timeout=REQUEST_TIMEOUT_S).json()
    declared = info.get("params") or {}
    budget_params = {m: method_class(m).budget_param for m in offered_methods()}
    return {
        m: sorted(set(declared.get(m, {})) | {p for p in (b, "seed") if p}) for m, b in budget_params.items()
    }


# values at the edges of what JSON and the explainers take, tried before anything else hypothesis makes up
EDGE_VALUES = [
    0,
    -1,
    1,
    2,
    2**31,
    2**53,
    2**63,
    10**30,
    0.5,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
]
JSON_SCALARS = st.one_of(
    st.sampled_from(EDGE_VALUES),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)


def test_real_photos_with_generated_params_never_get_a_5xx_or_hang(server_url: str) -> None:
    names = _param_names(server_url)
    requests_ = st.sampled_from(offered_methods()).flatmap(
        lambda m: st.tuples(st.just(m), st.dictionaries(st.sampled_from(names[m]), JSON_SCALARS, max_size=3))
    )
    photo = encode(noisy(COLOURS["BLUE BIRD"], seed=21))

    @given(
        request=requests_,
        target=st.one_of(st.none(), st.integers(min_value=-2, max_value=len(COLOURS) + 1)),
    )
    @bounded(PARAMS_EXAMPLES)
    def check(request: tuple[str, dict], target: int | None) -> None:
        method, params = request
        form = {"method": method, "params": json.dumps(params)}  # NaN / Infinity spelled as Python does
        if target is not None:
            form["target"] = str(target)
        r = requests.post(
            f"{server_url}/api/explain",  # waits for the worker: its failures show as this status
            files={"image": ("photo.png", photo, "image/png")},
            data=form,
            timeout=REQUEST_TIMEOUT_S,
        )
        STATUSES[f"params {r.status_code}"] += 1
        assert r.status_code < 500, (method, params, target, r.text)

    check()


def test_fuzzing_kept_the_server_memory_bounded(server_url: str) -> None:
    """Every request above ran in this process: its peak resident memory since the server started."""
    if "start" not in MEMORY:
        pytest.skip("this kernel cannot reset the peak-memory count (/proc/self/clear_refs)")
    growth_mib = (_status_kib("VmHWM") - MEMORY["start"]) / 1024
    print(f"\npeak memory growth while fuzzing: {growth_mib:.0f} MiB")
    assert growth_mib < MAX_GROWTH_MIB
