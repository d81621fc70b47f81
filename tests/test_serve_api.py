"""`sg2image serve`'s HTTP API, in process, on a tiny random pipeline."""

import asyncio
import base64
import io
import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_fixtures import GRAPH, tiny_layout_pipeline, tiny_pipeline
from typer.testing import CliRunner

from sg2image.cli import app as cli_app
from sg2image.serve import ServeSettings, create_app
from sg2image.serve.app import STATIC

pytestmark = pytest.mark.usefixtures("one_thread")

# TestClient names the host "testserver": allowed as a real deployment would allow its name
SETTINGS = dict(
    max_steps=6, default_steps=2, max_images=8, max_batch=8, max_objects=16,
    allow_hosts=("testserver",),
)  # fmt: skip
G2 = {"objects": ["green triangle"]}
G3 = {"objects": ["yellow circle", "blue square", "red circle"], "relationships": [[2, "above", 0]]}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(create_app(pipe, ServeSettings(**SETTINGS), model_name="tiny")) as c:
        yield c


def post(client, path, body, **kw):
    return client.post(path, json=body, **kw)


def gen(client, graphs, **kw):
    return post(client, "/api/generate", {"graphs": graphs, "steps": 2, **kw})


def pngs(response) -> list[bytes]:
    return [base64.b64decode(im["png"]) for im in response.json()["images"]]


# ---------------------------------------------------------------------------- generate


def test_generate_gives_pngs_with_their_seeds(client):
    r = gen(client, [GRAPH, G2], num_images=2, seed=5)
    assert r.status_code == 200, r.text
    data = r.json()
    assert [(im["graph"], im["seed"]) for im in data["images"]] == [(0, 5), (0, 6), (1, 7), (1, 8)]
    assert data["steps"] == 2 and data["sampler"] == "dpm++" and data["batch_size"] == 4
    for png in pngs(r):
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size == (32, 32) == (data["width"], data["height"])
    assert len(set(pngs(r))) == 4  # other seeds, other images


def test_height_and_width_choose_the_image_size(client, pipe):
    f = pipe.vae_scale_factor
    r = gen(client, [GRAPH], seed=1, height=16, width=48)
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == (48, 16)
    assert Image.open(io.BytesIO(pngs(r)[0])).size == (48, 16)
    limits = client.get("/api/vocabulary").json()["limits"]
    assert limits["max_image_side"] == 64 and limits["image_size_step"] == f  # 2 x 32 px
    for field, value, words in (("height", 17, "multiple of"), ("width", 66, "less than or equal"),
                                ("height", "32", "valid integer")):  # fmt: skip
        r = gen(client, [GRAPH], **{field: value})
        assert r.status_code == 422, (field, value, r.text)
        problem = r.json()["detail"][0]
        assert problem["loc"] == ["body", field] and words in problem["msg"], problem


def test_an_image_is_the_same_batched_or_alone(client):
    """Image j of a request uses seed + j and its own generator: asked for alone with that
    seed, it comes back byte for byte, though it was made in a batch of 3."""
    together = gen(client, [GRAPH, G2, G3], seed=40)
    assert together.json()["batch_size"] == 3
    for j, (graph, png) in enumerate(zip([GRAPH, G2, G3], pngs(together), strict=True)):
        alone = gen(client, [graph], seed=40 + j)
        assert alone.json()["batch_size"] == 1
        assert pngs(alone)[0] == png


def test_random_seed_is_returned_and_reproduces(client):
    first = gen(client, [GRAPH])
    seed = first.json()["images"][0]["seed"]
    again = gen(client, [GRAPH], seed=seed)
    assert pngs(again) == pngs(first)
    assert pngs(gen(client, [GRAPH], seed=(seed + 1) % 2**32)) != pngs(first)
    assert [
        im["seed"] for im in gen(client, [GRAPH], seed=2**32 - 1, num_images=2).json()["images"]
    ] == [2**32 - 1, 0]  # wraps, and every returned seed is a valid request seed


def test_sampler_and_png_answer(client):
    r = gen(client, [GRAPH], sampler="ddim", seed=1, guidance=1.0)
    assert r.status_code == 200 and r.json()["sampler"] == "ddim"
    r = post(
        client,
        "/api/generate",
        {"graphs": [GRAPH], "steps": 2, "seed": 9},
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-seed"] == "9" and r.content == pngs(gen(client, [GRAPH], seed=9))[0]
    r = post(
        client,
        "/api/generate",
        {"graphs": [GRAPH], "steps": 2, "num_images": 2},
        headers={"Accept": "image/png"},
    )
    assert r.status_code == 406 and "holds one image" in r.json()["detail"]


# ---------------------------------------------------------------------------- bad input


def problems(response) -> list[tuple[list, str]]:
    assert response.status_code == 422, response.text
    return [(p["loc"], p["msg"]) for p in response.json()["detail"]]


def test_graph_problems_are_422_with_their_place(client):
    bad = {"objects": ["red circel", "blue square"], "relationships": [[0, "left off", 5]]}
    assert problems(gen(client, [GRAPH, bad])) == [
        (
            ["body", "graphs", 1, "objects", 0],
            "unknown object 'red circel' (did you mean 'red circle', 'green circle', "
            "'purple circle'?)",
        ),
        (["body", "graphs", 1, "relationships", 0], "object index 5 out of range (2 objects)"),
        (
            ["body", "graphs", 1, "relationships", 0],
            "unknown predicate 'left off' (did you mean 'left of'?)",
        ),
    ]
    many = {"objects": ["red circle"] * 7}  # the model takes at most 6
    assert problems(gen(client, [many])) == [
        (["body", "graphs", 0, "objects"], "7 objects, this model accepts at most 6")
    ]
    assert problems(gen(client, [{"objects": ["red circle"], "colour": 1}])) == [
        (["body", "graphs", 0, "colour"], "unknown field")
    ]
    assert problems(gen(client, [{"objects": "red circle"}]))[0][0] == [
        "body",
        "graphs",
        0,
        "objects",
    ]
    assert problems(gen(client, [{"objects": ["red circle"], "relationships": [[0, 1, 2]]}]))[0][
        0
    ] == ["body", "graphs", 0, "relationships", 0, 1]
    assert problems(gen(client, ["red circle"])) == [
        (["body", "graphs", 0], "expected an object, got str")
    ]


def test_limits_are_422(client):
    assert problems(gen(client, [GRAPH], steps=7))[0][0] == ["body", "steps"]
    assert problems(gen(client, [GRAPH], num_images=9))[0][0] == ["body", "num_images"]
    assert problems(gen(client, [GRAPH] * 3, num_images=3)) == [
        (
            ["body", "num_images"],
            "3 graph(s) x 3 image(s) = 9 images; this server makes at most 8 per request",
        )
    ]
    assert problems(gen(client, [GRAPH] * 9))[0][0] == ["body", "graphs"]
    assert problems(gen(client, []))[0][0] == ["body", "graphs"]
    assert problems(gen(client, [GRAPH], seed=-1))[0][0] == ["body", "seed"]
    assert problems(gen(client, [GRAPH], seed=2**32))[0][0] == ["body", "seed"]
    assert problems(gen(client, [GRAPH], guidance=51))[0][0] == ["body", "guidance"]
    assert problems(gen(client, [GRAPH], sampler="nope"))[0][0] == ["body", "sampler"]
    assert problems(gen(client, [GRAPH], path="/etc/passwd"))[0] == (
        ["body", "path"],
        "Extra inputs are not permitted",
    )


def test_bodies_that_are_not_json_or_too_big(client):
    r = client.post(
        "/api/generate", content=b"x" * 300_000, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "larger than 262144 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b" " * 10_000

    r = client.post("/api/generate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/generate", content=json.dumps({"graphs": [GRAPH]}))
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = client.post("/api/validate", data={"graphs": "x"})  # a form
    assert r.status_code == 415
    r = client.post("/api/generate", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post(
        "/api/generate", content=b"[" * 5000, headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500
    assert client.get("/api/generate").status_code == 405
    assert client.get("/nope").status_code == 404


# ---------------------------------------------------------------------------- validate, draw


def test_validate_says_what_the_cli_says(client, pipe, tmp_path):
    doc = [GRAPH, {"objects": ["red circel", "blue square"], "relationships": [[0, "above", 0]]}]
    r = post(client, "/api/validate", doc)
    assert r.status_code == 200
    data = r.json()
    assert not data["ok"] and data["errors"][0]["loc"] == ["body", 1, "objects", 0]
    (tmp_path / "g.json").write_text(json.dumps(doc))
    pipe.vocab.save(tmp_path / "vocab.json")
    cli = CliRunner().invoke(
        cli_app,
        [
            "validate",
            str(tmp_path / "g.json"),
            "--vocab",
            str(tmp_path / "vocab.json"),
            "--max-objects",
            "6",
            "--max-relationships",
            "64",
        ],
    )
    assert cli.exit_code == 1
    assert data["problems"] == cli.stdout.strip().splitlines()
    assert data["problems"] == [
        "scenes[1].objects[0]: unknown object 'red circel' (did you mean 'red circle', "
        "'green circle', 'purple circle'?)",
        "scenes[1].relationships[0]: object 0 related to itself",
    ]
    one = post(client, "/api/validate", {"objects": ["red circle"], "relationships": [[0, "x", 1]]})
    assert one.json()["problems"][0] == "relationships[0]: object index 1 out of range (1 object)"
    assert one.json()["errors"][0]["loc"] == ["body", "relationships", 0]
    assert post(client, "/api/validate", [GRAPH, G2]).json() == {
        "ok": True,
        "num_graphs": 2,
        "problems": [],
        "errors": [],
    }
    odd = post(client, "/api/validate", "text").json()
    assert odd["problems"] == ["expected a scene (object) or a list of scenes, got str"]


def test_draw_gives_a_png_of_the_graph(client):
    r = post(client, "/api/draw", {"graph": G3, "size": 200})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (200, 200)
    # drawing needs a well-formed graph, not known names (the editor shows unknown names)
    assert post(client, "/api/draw", {"graph": {"objects": ["a cat"]}}).status_code == 200
    bad = {"objects": ["red circle"], "relationships": [[0, "above", 3]]}
    assert problems(post(client, "/api/draw", {"graph": bad}))[0][0] == [
        "body",
        "graph",
        "relationships",
        0,
    ]
    assert problems(post(client, "/api/draw", {"graph": {"objects": ["x" * 33]}}))[0] == (
        ["body", "graph", "objects", 0],
        "longer than 32 characters",
    )
    assert problems(post(client, "/api/draw", {"graph": [GRAPH]}))[0][0] == ["body", "graph"]
    assert problems(post(client, "/api/draw", {"graph": GRAPH, "size": 5000}))[0][0] == [
        "body",
        "size",
    ]


# ---------------------------------------------------------------------------- the rest


def test_vocabulary_examples_health(client, pipe):
    vocab = client.get("/api/vocabulary").json()
    assert vocab["objects"] == pipe.vocab.object_names[1:]
    assert vocab["predicates"] == pipe.vocab.predicate_names[1:]
    assert vocab["default_sampler"] == "dpm++" and "lms" in vocab["samplers"]
    assert vocab["limits"]["max_objects"] == 6 and vocab["image_size"] == 32
    examples = client.get("/api/examples").json()["examples"]
    assert len(examples) == 4 and examples[0]["name"].startswith("Shapes test scene")
    assert post(client, "/api/validate", [e["graph"] for e in examples]).json()["ok"]
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert health["stats"]["images"] > 0 and health["stats"]["failed"] == 0
    for path in ("/", "/api/health"):  # HEAD answers like GET, without a body
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path


def test_page_and_its_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in ("index.html", "editor.js", "editor.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert client.get("/static/editor.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_no_endpoint_takes_a_path(client):
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/api/generate",
        "/api/validate",
        "/api/draw",
        "/api/vocabulary",
        "/api/examples",
        "/api/health",
    }
    text = json.dumps(schema).lower()
    for word in ("path", "file", "dir", "folder", "url"):
        assert f'"{word}"' not in text
    for op in (op for item in schema["paths"].values() for op in item.values()):
        assert not op.get("parameters")  # no query or path parameters at all


# ---------------------------------------------------------------------------- concurrency


class Gate:
    """Wraps the runner: holds every batch until released, and records batch sizes."""

    def __init__(self, runner):
        self.runner, self.release, self.sizes = runner, threading.Event(), []

    def __call__(self, key, graphs, seeds, wanted):
        self.sizes.append(len(seeds))
        assert self.release.wait(20)
        return self.runner(key, graphs, seeds, wanted)


def gated_app(pipe, **settings):
    app = create_app(pipe, ServeSettings(**{**SETTINGS, **settings}))
    gate = Gate(app.state.batcher.runner)
    app.state.batcher.runner = gate
    return app, gate


async def wait_until(condition, tasks, seconds=20.0):
    """Poll condition(); fail with what came back if a request ends first or time runs out."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        ended = [t.result() for t in tasks if t.done()]
        assert not ended, [(r.status_code, r.text[:300]) for r in ended]
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def scenario(app, gate, first, then):
    """Send `first`, wait until it holds the worker, then run `then(post, first_task)`."""

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:

            def post(body):
                return asyncio.create_task(c.post("/api/generate", json=body))

            running = post(first)
            await wait_until(lambda: gate.sizes, [running])
            try:
                return await then(post, running)
            finally:
                gate.release.set()

    try:
        return asyncio.run(main())
    finally:
        app.state.batcher.close()


def test_concurrent_requests_are_batched_and_keep_their_images(client, pipe):
    app, gate = gated_app(pipe, max_batch=4)
    bodies = [{"graphs": [g], "steps": 2, "seed": 70 + k} for k, g in enumerate([GRAPH, G2, G3])]
    bodies.append({"graphs": [G2], "steps": 3, "seed": 1})  # another key: its own batch
    waiting = app.state.batcher

    async def then(post, running):
        tasks = [running]
        for body in bodies[1:]:
            tasks.append(post(body))
            await wait_until(lambda n=len(tasks): waiting.waiting == n - 1, tasks)
        gate.release.set()
        return await asyncio.gather(*tasks)

    responses = scenario(app, gate, bodies[0], then)
    assert [r.status_code for r in responses] == [200] * 4
    assert gate.sizes == [
        1,
        2,
        1,
    ]  # alone (it found the worker idle), the two of one key, the other
    assert [r.json()["batch_size"] for r in responses] == [1, 2, 2, 1]
    for body, r in zip(bodies, responses, strict=True):
        assert pngs(post(client, "/api/generate", body)) == pngs(r)  # as if alone


def test_full_queue_is_503_with_retry_after(pipe):
    app, gate = gated_app(pipe, max_batch=1, max_queue=1)
    body = {"graphs": [GRAPH], "steps": 2}

    async def then(post, running):
        queued = post(body)
        await wait_until(lambda: app.state.batcher.waiting == 1, [running, queued])
        refused = await post(body)  # one running, one waiting: no room
        gate.release.set()
        return refused, await running, await queued

    refused, a, b = scenario(app, gate, body, then)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert "busy" in refused.json()["detail"]
    assert a.status_code == b.status_code == 200
    assert app.state.batcher.stats["rejected"] == 1


def test_timeout_is_503_and_drops_waiting_work(pipe):
    app, gate = gated_app(pipe, max_batch=1, timeout_s=0.5)
    body = {"graphs": [GRAPH], "steps": 2}

    async def then(post, running):
        queued = post(body)
        responses = await asyncio.gather(running, queued)
        assert app.state.batcher.waiting == 0  # the one that had not started is gone
        return responses

    responses = scenario(app, gate, body, then)
    assert [r.status_code for r in responses] == [503, 503]
    assert all("not done within 0.5 s" in r.json()["detail"] for r in responses)
    assert gate.sizes == [1] and app.state.batcher.stats["timeouts"] == 2


# ---------------------------------------------------------------------------- layout

BOXES = [[0.1, 0.4, 0.3, 0.6], [0.6, 0.4, 0.9, 0.7]]  # GRAPH's objects, red circle left
MOVED = [[0.6, 0.4, 0.8, 0.6], [0.1, 0.4, 0.4, 0.7]]  # the same boxes, swapped sides
NEEDS_BOXES = (
    "layout 'given' needs a box for every object ([x0, y0, x1, y1] in [0, 1]); "
    "send boxes or layout 'predicted'"
)


@pytest.fixture(scope="module")
def layout_pipe(tmp_path_factory):
    return tiny_layout_pipeline(tmp_path_factory.mktemp("serve-layout"))


@pytest.fixture(scope="module")
def layout_client(layout_pipe):
    app = create_app(layout_pipe, ServeSettings(**SETTINGS), model_name="tiny-layout")
    with TestClient(app) as c:
        yield c


def boxes_of(response) -> list:
    return [im["boxes"] for im in response.json()["images"]]


def test_layout_model_says_so_and_predicts_boxes(layout_client):
    vocab = layout_client.get("/api/vocabulary").json()
    assert vocab["has_layout"] and vocab["layout_modes"] == ["predicted", "given"]
    assert layout_client.get("/api/health").json()["has_layout"]
    # its examples keep the Shapes scenes' true boxes, to be drawn as given
    example = layout_client.get("/api/examples").json()["examples"][0]["graph"]
    assert len(example["boxes"]) == len(example["objects"])
    schema = layout_client.get("/openapi.json").json()["components"]["schemas"]
    layout = schema["GenerateRequest"]["properties"]["layout"]
    assert layout["enum"] == ["predicted", "given"] and layout["default"] == "predicted"

    r = gen(layout_client, [GRAPH, G3], seed=3)
    assert r.status_code == 200, r.text
    assert r.json()["layout"] == "predicted"
    boxes = boxes_of(r)
    assert [len(b) for b in boxes] == [2, 3]  # one box per object, the image node left out
    for x0, y0, x1, y1 in (box for image in boxes for box in image):
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    again = gen(layout_client, [GRAPH, G3], seed=3, layout="predicted")
    assert boxes_of(again) == boxes and pngs(again) == pngs(r)  # the default, reproducible
    assert boxes_of(gen(layout_client, [GRAPH, G3], seed=4)) != boxes  # a seed, a layout


def test_layout_given_draws_the_boxes_sent(layout_client):
    r = gen(layout_client, [dict(GRAPH, boxes=BOXES), G2], seed=8, layout="given", num_images=2)
    assert r.status_code == 422  # G2 has no boxes
    r = gen(layout_client, [dict(GRAPH, boxes=BOXES)], seed=8, layout="given", num_images=2)
    assert r.status_code == 200, r.text
    assert r.json()["layout"] == "given" and boxes_of(r) == [BOXES, BOXES]
    moved = gen(layout_client, [dict(GRAPH, boxes=MOVED)], seed=8, layout="given")
    assert boxes_of(moved) == [MOVED]
    assert pngs(moved)[0] != pngs(r)[0]  # same graph and seed: the boxes made the difference
    # boxes sent with layout 'predicted' are not used
    predicted = gen(layout_client, [dict(GRAPH, boxes=BOXES)], seed=8)
    assert boxes_of(predicted) == boxes_of(gen(layout_client, [GRAPH], seed=8)) != [BOXES]
    png = post(
        layout_client,
        "/api/generate",
        {"graphs": [dict(GRAPH, boxes=MOVED)], "steps": 2, "seed": 8, "layout": "given"},
        headers={"Accept": "image/png"},
    )
    assert png.content == pngs(moved)[0] and json.loads(png.headers["x-boxes"]) == MOVED


def test_layout_problems_are_located_422s(layout_client, client):
    boxed = dict(GRAPH, boxes=BOXES)
    assert problems(gen(layout_client, [boxed, GRAPH, G2], layout="given")) == [
        (["body", "graphs", 1, "boxes"], NEEDS_BOXES),
        (["body", "graphs", 2, "boxes"], NEEDS_BOXES),
    ]
    assert problems(gen(layout_client, [dict(GRAPH, boxes=BOXES[:1])], layout="given")) == [
        (["body", "graphs", 0, "boxes"], "1 entries for 2 objects")
    ]
    flipped = dict(GRAPH, boxes=[[0.3, 0.4, 0.1, 0.6], BOXES[1]])
    assert problems(gen(layout_client, [flipped], layout="given")) == [
        (["body", "graphs", 0, "boxes", 0], "must be x0 < x1, y0 < y1, all in [0, 1]")
    ]
    assert problems(gen(layout_client, [GRAPH], layout="drawn")) == [
        (["body", "layout"], "Input should be 'predicted' or 'given'")
    ]
    assert problems(gen(layout_client, [GRAPH], layout=None))[0][0] == ["body", "layout"]
    # a layout-free model: it says so, takes 'predicted' (or nothing), refuses 'given'
    vocab = client.get("/api/vocabulary").json()
    assert not vocab["has_layout"] and vocab["layout_modes"] == ["predicted"]
    assert not client.get("/api/health").json()["has_layout"]
    assert "boxes" not in client.get("/api/examples").json()["examples"][0]["graph"]
    assert problems(gen(client, [boxed], layout="given")) == [
        (
            ["body", "layout"],
            "this model is layout-free: it draws without boxes, so it takes none; leave layout out",
        )
    ]
    r = gen(client, [boxed], layout="predicted", seed=2)
    assert r.status_code == 200 and r.json()["layout"] is None and boxes_of(r) == [None]
    assert pngs(r) == pngs(gen(client, [GRAPH], seed=2))  # its boxes change nothing


def test_layout_modes_never_share_a_batch(layout_client, layout_pipe):
    app, gate = gated_app(layout_pipe, max_batch=4)
    boxed = dict(GRAPH, boxes=BOXES)
    bodies = [
        {"graphs": [G2], "steps": 2, "seed": 1},
        {"graphs": [boxed], "steps": 2, "seed": 2, "layout": "given"},
        {"graphs": [G3], "steps": 2, "seed": 3},
        {"graphs": [boxed], "steps": 2, "seed": 4},  # predicted: its boxes are not used
    ]

    async def then(post, running):
        tasks = [running]
        for body in bodies[1:]:
            tasks.append(post(body))
            await wait_until(lambda n=len(tasks): app.state.batcher.waiting == n - 1, tasks)
        gate.release.set()
        return await asyncio.gather(*tasks)

    responses = scenario(app, gate, bodies[0], then)
    assert [r.status_code for r in responses] == [200] * 4
    # alone; then the oldest waiting (given) on its own; then the two predicted together
    assert gate.sizes == [1, 1, 2]
    assert [r.json()["batch_size"] for r in responses] == [1, 1, 2, 2]
    assert [r.json()["layout"] for r in responses] == [
        "predicted",
        "given",
        "predicted",
        "predicted",
    ]
    assert boxes_of(responses[1]) == [BOXES] and boxes_of(responses[3]) != [BOXES]
    for body, r in zip(bodies, responses, strict=True):  # as if alone, boxes and images
        alone = post(layout_client, "/api/generate", body)
        assert boxes_of(alone) == boxes_of(r) and pngs(alone) == pngs(r)


# ---------------------------------------------------------------------------- depth order

# red circle behind blue square, their boxes overlapping
DEPTH = {
    "objects": ["red circle", "blue square"],
    "relationships": [[0, "behind", 1]],
    "boxes": [[0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.8, 0.8]],
}
# three objects in a ring: 0 before 1 before 2 before 0; the last triple closes it
RING = {
    "objects": ["red circle", "blue square", "green triangle"],
    "relationships": [[0, "in front of", 1], [2, "behind", 1], [2, "in front of", 0]],
}
RING_CYCLE = "'in front of' makes a depth cycle between objects 2 and 0"


@pytest.fixture(scope="module")
def depth_pipe(tmp_path_factory):
    return tiny_layout_pipeline(tmp_path_factory.mktemp("serve-depth"), world="depth")


@pytest.fixture(scope="module")
def depth_client(depth_pipe):
    app = create_app(depth_pipe, ServeSettings(**SETTINGS), model_name="tiny-depth")
    with TestClient(app) as c:
        yield c


def test_vocabulary_says_which_depth_predicates_the_model_has(depth_client, client):
    vocab = depth_client.get("/api/vocabulary").json()
    assert vocab["depth_predicates"] == ["in front of", "behind"]
    assert {"in front of", "behind"} <= set(vocab["predicates"])
    schema = depth_client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["VocabularyResponse"]["properties"]["depth_predicates"]["type"] == "array"
    # the examples are the depth world's test scenes, some with depth triples, all valid
    examples = depth_client.get("/api/examples").json()["examples"]
    assert examples[0]["name"].startswith("Shapes depth test scene")
    triples = [r for e in examples for r in e["graph"]["relationships"]]
    assert any(p in ("in front of", "behind") for _, p, _ in triples)
    assert post(depth_client, "/api/validate", [e["graph"] for e in examples]).json()["ok"]
    # a model without depth order: none, and the predicates are unknown to it, as before
    assert client.get("/api/vocabulary").json()["depth_predicates"] == []
    assert problems(gen(client, [DEPTH])) == [
        (["body", "graphs", 0, "relationships", 0], "unknown predicate 'behind'")
    ]


def test_depth_triples_generate_and_a_cycle_is_a_located_422(depth_client, depth_pipe, tmp_path):
    r = gen(depth_client, [DEPTH, RING], seed=4, layout="predicted")
    assert problems(r) == [(["body", "graphs", 1, "relationships", 2], RING_CYCLE)]
    both = dict(DEPTH, relationships=[[0, "behind", 1], [0, "in front of", 1]])
    assert problems(gen(depth_client, [both], layout="given")) == [
        (
            ["body", "graphs", 0, "relationships", 1],
            "'in front of' makes a depth cycle between objects 0 and 1",
        )
    ]
    r = gen(depth_client, [DEPTH], seed=4, layout="given")
    assert r.status_code == 200, r.text
    assert boxes_of(r) == [DEPTH["boxes"]]
    # /api/validate says what `sg2image validate` prints, at the same place
    doc = [DEPTH, RING]
    data = post(depth_client, "/api/validate", doc).json()
    assert not data["ok"] and data["errors"][0]["loc"] == ["body", 1, "relationships", 2]
    (tmp_path / "g.json").write_text(json.dumps(doc))
    depth_pipe.vocab.save(tmp_path / "vocab.json")
    cli = CliRunner().invoke(
        cli_app, ["validate", str(tmp_path / "g.json"), "--vocab", str(tmp_path / "vocab.json")]
    )
    assert cli.exit_code == 1
    assert data["problems"] == cli.stdout.strip().splitlines()
    assert data["problems"] == [f"scenes[1].relationships[2]: {RING_CYCLE}"]


# ---------------------------------------------------------------------------- the command


def test_serve_command_builds_the_app_on_loopback(pipe, tmp_path, monkeypatch):
    import uvicorn

    pipe.save_pretrained(tmp_path / "my-model")
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: seen.update(app=app, host=host))
    args = ["serve", "--model", str(tmp_path / "my-model"), "--max-batch", "3", "--max-steps", "9"]
    args += ["--allow-host", "testserver", "--allow-host", "sg.example"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert seen["host"] == "127.0.0.1"
    settings = seen["app"].state.settings
    assert (settings.max_batch, settings.max_steps, settings.default_steps) == (3, 9, 9)
    assert settings.allow_hosts == ("127.0.0.1", "testserver", "sg.example")  # bound + added
    with TestClient(seen["app"]) as c:
        assert c.get("/api/health").json()["model"] == "my-model"  # a name, not the path
    result = CliRunner().invoke(cli_app, ["serve", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such folder" in result.output
    assert "Traceback" not in result.output


def test_runner_stops_a_batch_nobody_waits_for_at_its_next_step(pipe):
    from sg2image.graph import parse_graphs
    from sg2image.serve.batching import BatchKey, Stopped
    from sg2image.serve.generation import PipelineRunner

    runner, asked = PipelineRunner(pipe), []

    def wanted():
        asked.append(1)
        return len(asked) < 2  # the callers leave during the second step

    graphs = parse_graphs([GRAPH])
    with pytest.raises(Stopped):
        runner(BatchKey(steps=10, guidance=2.0, sampler=None), graphs, [0], wanted)
    assert len(asked) == 2  # asked after steps 1 and 2; steps 3-10 never ran
    done = runner(BatchKey(steps=3, guidance=2.0, sampler=None), graphs, [0])
    assert len(done) == 1 and done[0].png.startswith(b"\x89PNG")  # the next batch runs whole


# ---------------------------------------------------------------------------- fast sampler


def test_fast_sampler_is_the_default_with_a_student_and_full_on_request(tmp_path):
    """A model with a distilled student: a request that names no steps, guidance or sampler
    gets it ("fast", its own steps, one UNet evaluation a step); steps + guidance, or a
    scheduler, get the full model; guidance sent to "fast" is a 422 at guidance."""
    import copy

    from sg2image.training.config import DistillConfig
    from sg2image.training.distill import student_scheduler

    pipe = tiny_pipeline(tmp_path)
    lcm = student_scheduler(pipe.scheduler.config, DistillConfig())
    pipe.set_student(copy.deepcopy(pipe.unet), lcm, 3, 2.0)
    calls = {"student": 0, "unet": 0}
    for name in calls:
        getattr(pipe, "student_unet" if name == "student" else "unet").register_forward_hook(
            lambda *a, name=name: calls.__setitem__(name, calls[name] + 1)
        )
    with TestClient(create_app(pipe, ServeSettings(**SETTINGS), model_name="tiny")) as c:
        vocab = c.get("/api/vocabulary").json()
        assert vocab["default_sampler"] == "fast" and vocab["samplers"][:2] == ["fast", "dpm++"]
        assert (vocab["limits"]["fast_steps"], vocab["limits"]["fast_guidance"]) == (3, 2.0)
        r = post(c, "/api/generate", {"graphs": [GRAPH], "seed": 1})
        assert r.status_code == 200, r.text
        data = r.json()
        assert (data["sampler"], data["steps"], data["guidance"]) == ("fast", 3, 2.0)
        assert calls == {"student": 3, "unet": 0}
        again = post(c, "/api/generate", {"graphs": [GRAPH], "seed": 1, "sampler": "fast"})
        assert pngs(again) == pngs(r)  # the same image, named or by default
        full = post(c, "/api/generate", {"graphs": [GRAPH], "seed": 1, "steps": 2, "guidance": 2})
        assert (full.json()["sampler"], full.json()["steps"]) == ("dpm++", 2)
        assert calls == {"student": 6, "unet": 2} and pngs(full) != pngs(r)
        bad = post(c, "/api/generate", {"graphs": [GRAPH], "sampler": "fast", "guidance": 3})
        assert bad.status_code == 422 and problems(bad)[0][0] == ["body", "guidance"]


def test_finish_sampler_is_a_layout_models_default_and_checks_its_steps(tmp_path):
    """A layout model with a finish timestep: a request naming no sampler, steps or guidance
    gets "finish" (2 steps, 3 UNet evaluations); steps other than 2 sent to it are a 422 at
    steps; steps + guidance give the full sampler."""
    pipe = tiny_layout_pipeline(tmp_path)
    pipe.register_to_config(finish_timestep=39)
    rows = []
    pipe.unet.register_forward_hook(lambda m, a, o: rows.append(a[0].shape[0]))
    with TestClient(create_app(pipe, ServeSettings(**SETTINGS), model_name="tiny")) as c:
        vocab = c.get("/api/vocabulary").json()
        assert vocab["default_sampler"] == "finish" and vocab["samplers"][0] == "finish"
        r = post(c, "/api/generate", {"graphs": [GRAPH], "seed": 1})
        assert r.status_code == 200, r.text
        assert (r.json()["sampler"], r.json()["steps"], r.json()["guidance"]) == ("finish", 2, 2.0)
        assert rows == [1, 2]  # the draft on the conditional row, the finish with CFG
        named = post(c, "/api/generate", {"graphs": [GRAPH], "seed": 1, "sampler": "finish"})
        assert pngs(named) == pngs(r)
        bad = post(c, "/api/generate", {"graphs": [GRAPH], "sampler": "finish", "steps": 4})
        assert bad.status_code == 422 and problems(bad)[0][0] == ["body", "steps"]
        full = post(c, "/api/generate", {"graphs": [GRAPH], "seed": 1, "steps": 2, "guidance": 2})
        assert full.json()["sampler"] == "dpm++" and rows[4:] == [2, 2]


def test_finish_with_a_students_draft_takes_its_own_steps(tmp_path):
    """A layout model whose finisher student drafts for the finish sampler (the shipped
    model's default): 3 steps (the student's 2, the guided one), steps 2 a 422 that says 3,
    and the vocabulary's limits give finish_steps 3."""
    import copy

    from sg2image.training.config import DistillConfig
    from sg2image.training.distill import student_scheduler

    pipe = tiny_layout_pipeline(tmp_path)
    lcm = student_scheduler(pipe.scheduler.config, DistillConfig())
    pipe.set_student(copy.deepcopy(pipe.unet), lcm, 2, 2.0, default=False, max_timestep=59)
    pipe.register_to_config(finish_timestep=39, finish_draft="student")
    rows = []
    for who in ("student_unet", "unet"):
        getattr(pipe, who).register_forward_hook(
            lambda m, a, o, who=who: rows.append((who, a[0].shape[0], int(a[1].flatten()[0])))
        )
    with TestClient(create_app(pipe, ServeSettings(**SETTINGS), model_name="tiny")) as c:
        vocab = c.get("/api/vocabulary").json()
        assert vocab["default_sampler"] == "finish" and vocab["limits"]["finish_steps"] == 3
        r = post(c, "/api/generate", {"graphs": [GRAPH], "seed": 1})
        assert (r.json()["sampler"], r.json()["steps"], r.json()["guidance"]) == ("finish", 3, 2.0)
        assert rows == [("student_unet", 1, 999), ("student_unet", 1, 59), ("unet", 2, 39)]
        bad = post(c, "/api/generate", {"graphs": [GRAPH], "sampler": "finish", "steps": 2})
        assert bad.status_code == 422 and problems(bad)[0][0] == ["body", "steps"]
        assert "takes 3 steps" in bad.text
        schema = c.get("/openapi.json").text
        assert "the distilled student's 2-step draft" in schema
