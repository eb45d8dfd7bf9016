"""``contrast`` in the web API ("why the target and not B"): the map equals the library's contrastive
explanation of the same prepared photo; a contrast that is unknown or the target itself is a 400. And
``/api/neighbours``: the nearest training images equal the library's search, served by row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient
from PIL import Image

from _apputil import COLOURS, encode, make_tiny_run, noisy
from birdlens.app.server import create_app, create_app_from_run
from birdlens.app.service import ModelService
from birdlens.explain.base import explainer_for
from birdlens.explain.examples import features_for, index_for_run, nearest_examples
from birdlens.runs.trained import load_trained


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("app_contrast"))


@pytest.fixture(scope="module")
def client(tiny_run: Path):
    with TestClient(create_app_from_run(tiny_run)) as c:
        yield c


def explain(client: TestClient, data: bytes, url: str = "/api/explain", **form: str):
    return client.post(url, files={"image": ("p.png", data, "application/octet-stream")}, data=form)


def test_a_contrastive_gradcam_is_the_librarys_map_of_the_logit_difference(
    client: TestClient, tiny_run: Path
) -> None:
    photo = noisy(COLOURS["RED BIRD"], seed=5)
    classes = sorted(COLOURS)
    red, green = classes.index("RED BIRD"), classes.index("GREEN BIRD")
    r = explain(
        client, encode(photo), method="gradcam", target=str(red), contrast=str(green), include_map="true"
    )
    assert r.status_code == 200, r.text
    ev = r.json()
    assert (ev["target"], ev["contrast"], ev["contrast_label"]) == (red, green, "GREEN BIRD")
    assert ev["params"]["contrast"] == green
    trained = load_trained(tiny_run)
    x = trained.transform()(Image.fromarray(photo))[None]
    want = explainer_for(trained, "gradcam").explain(x, red, contrast=green).maps[0].numpy()
    np.testing.assert_allclose(np.array(ev["map"]), want, rtol=0, atol=1e-5)
    plain = explain(client, encode(photo), method="gradcam", target=str(red), include_map="true").json()
    assert plain["contrast"] is None and not np.allclose(plain["map"], ev["map"], atol=1e-3)


def test_a_contrastive_task_for_a_perturbation_method(client: TestClient) -> None:
    img = encode(noisy(COLOURS["BLUE BIRD"], seed=3))
    r = explain(
        client, img, url="/api/tasks", method="lime", params=json.dumps({"num_samples": 20}), contrast="2"
    )
    assert r.status_code == 202, r.text
    task = r.json()
    for _ in range(400):
        task = client.get(f"/api/tasks/{task['id']}").json()
        if task["state"] in ("done", "error", "cancelled"):
            break
    assert task["state"] == "done", task.get("error")
    assert task["result"]["contrast"] == 2 and task["result"]["target_label"] == "BLUE BIRD"


@pytest.mark.parametrize(
    ("form", "msg"),
    [
        ({"target": "1", "contrast": "1"}, "is the target itself"),
        ({"contrast": "7"}, "contrast must be a class index"),
        ({"contrast": "RED_INDEX"}, "is the class explained"),  # no target: the predicted class is red
    ],
)
def test_a_bad_contrast_is_a_400_naming_it(client: TestClient, form: dict[str, str], msg: str) -> None:
    red = str(sorted(COLOURS).index("RED BIRD"))
    form = {k: red if v == "RED_INDEX" else v for k, v in form.items()}
    r = explain(client, encode(noisy(COLOURS["RED BIRD"], seed=2)), method="gradcam", **form)
    assert r.status_code in (400, 422), r.text
    assert msg in json.dumps(r.json()["detail"])


def test_neighbours_are_the_librarys_nearest_training_images(client: TestClient, tiny_run: Path) -> None:
    photo = noisy(COLOURS["GREEN BIRD"], seed=11)
    r = explain(client, encode(photo), url="/api/neighbours", k="3")
    assert r.status_code == 200, r.text
    nb = r.json()
    trained = load_trained(tiny_run)
    x = trained.transform()(Image.fromarray(photo))[None]
    index = index_for_run(trained, tiny_run, quiet=True)
    want = nearest_examples(index, features_for(trained, x)[0], trained.model(x).detach()[0], 3)
    assert nb["metric"] == "cosine" and nb["predicted"]["label"] == "GREEN BIRD" == want["predicted"]["class"]
    for role in ("predicted", "runner_up"):
        got = nb[role]["neighbours"]
        assert [n["row"] for n in got] == [n["row"] for n in want[role]["neighbours"]]
        assert [n["distance"] for n in got] == pytest.approx(
            [n["distance"] for n in want[role]["neighbours"]], abs=1e-5
        )
        assert {n["label"] for n in got} == {nb[role]["label"]}
    first = nb["predicted"]["neighbours"][0]
    img = client.get(first["url"])
    assert img.status_code == 200 and img.content == Path(index.paths[first["row"]]).read_bytes()
    assert client.get(f"/api/neighbours/{len(index)}/image").status_code == 404
    assert client.get("/api/neighbours/-1/image").status_code == 404
    assert explain(client, encode(photo), url="/api/neighbours", k="0").status_code == 422


def test_a_server_without_a_run_says_it_has_no_training_set(tiny_run: Path) -> None:
    service = ModelService(load_trained(tiny_run), "bare")
    with TestClient(create_app(service)) as c:
        r = explain(c, encode(noisy(COLOURS["RED BIRD"], seed=1)), url="/api/neighbours")
        assert r.status_code == 400 and "no training set" in r.json()["detail"]
        assert c.get("/api/neighbours/0/image").status_code == 404
