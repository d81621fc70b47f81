"""`sg2image serve` against careless and hostile clients, on a real uvicorn server on loopback:
clients that leave before their answer, floods of costly drawings, a foreign Host header
(DNS rebinding), and bodies that are deep, huge or loose with types."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_fixtures import GRAPH, LoopbackServer, tiny_pipeline

import sg2image.drawing
from sg2image.serve import ServeSettings, create_app

pytestmark = pytest.mark.usefixtures("one_thread")

BODY = {"graphs": [GRAPH], "steps": 2}
SETTINGS = dict(max_steps=6, default_steps=2, max_objects=16)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("abuse"))


@pytest.fixture(scope="module")
def server(pipe):
    with LoopbackServer(create_app(pipe, ServeSettings(**SETTINGS))) as s:
        yield s


def until(condition, seconds=30.0, what="condition"):
    """Poll until condition() holds; the bound is generous, the check is exact."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached in {seconds} s"
        time.sleep(0.01)


class Gate:
    """Wraps the runner: each batch waits for a permit, so a test runs them one by one."""

    def __init__(self, runner):
        self.runner, self.permits, self.sizes = runner, threading.Semaphore(0), []

    def __call__(self, key, graphs, seeds, wanted):
        self.sizes.append(len(seeds))
        assert self.permits.acquire(timeout=60)
        return self.runner(key, graphs, seeds, wanted)

    def release(self, n=1):
        for _ in range(n):
            self.permits.release()


def gated_app(pipe, **settings):
    app = create_app(pipe, ServeSettings(**{**SETTINGS, **settings}))
    gate = Gate(app.state.batcher.runner)
    app.state.batcher.runner = gate
    return app, gate


class Counted:
    """The app, counting the HTTP requests it began and finished (answered or given up)."""

    def __init__(self, app):
        self.app, self.state, self.began, self.ended = app, app.state, 0, 0

    async def __call__(self, scope, receive, send):
        self.began += scope["type"] == "http"
        try:
            await self.app(scope, receive, send)
        finally:
            self.ended += scope["type"] == "http"


def send_raw(server, body, close=True, host="127.0.0.1", path="/api/generate"):
    """Connect, send a whole HTTP request, and (by default) close without reading."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode() + data)
    if close:
        sock.close()
    return sock


# ---------------------------------------------------------------------------- abandoned work


def test_abandoned_requests_leave_the_queue_and_a_real_client_is_served(pipe):
    """12 clients send a generate request and close at once, while a batch runs: none of
    them keeps a place in the queue (3 places), none of their images is made, and a real
    client that comes next is queued (not 503) and served."""
    app, gate = gated_app(pipe, max_batch=1, max_queue=3)
    batcher, app = app.state.batcher, Counted(app)
    with LoopbackServer(app) as server, ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(httpx.post, server.url + "/api/generate", json=BODY, timeout=60)
            until(lambda: gate.sizes == [1], what="the first batch")
            for _ in range(12):
                send_raw(server, BODY)
            # all 12 arrived and were given up (only the first is still being answered)
            until(lambda: (app.began, app.ended) == (13, 12), what="12 requests given up")
            until(lambda: batcher.waiting == 0, what="an empty queue")
            real = pool.submit(httpx.post, server.url + "/api/generate", json=BODY, timeout=60)
            until(lambda: batcher.waiting == 1 or real.done(), what="the real client queued")
            assert not real.done(), real.result().text  # queued, not refused
            gate.release(2)
            assert first.result().status_code == 200
            assert real.result().status_code == 200, real.result().text
        finally:
            gate.release(20)
    assert gate.sizes == [1, 1]  # the first and the real client: no abandoned image made
    assert batcher.stats["images"] == 2
    # those that reached the queue were counted as abandoned (in a burst, some found it full
    # before the first ones' departure was seen: refused, harmlessly)
    assert batcher.stats["requests"] - batcher.stats["abandoned"] == 2


def test_a_client_gone_mid_batch_is_not_waited_for_and_its_batch_serves_the_rest(pipe):
    app, gate = gated_app(pipe, max_batch=2, max_queue=4)
    batcher = app.state.batcher
    url = None
    with LoopbackServer(app) as server, ThreadPoolExecutor(2) as pool:
        url = server.url + "/api/generate"
        try:
            first = pool.submit(httpx.post, url, json=BODY, timeout=60)
            until(lambda: gate.sizes == [1], what="the first batch")
            leaver = send_raw(server, {**BODY, "seed": 1}, close=False)
            until(lambda: batcher.waiting == 1, what="the leaver queued")
            stayer = pool.submit(httpx.post, url, json={**BODY, "seed": 2}, timeout=60)
            until(lambda: batcher.waiting == 2, what="the stayer queued")
            gate.release()  # the first batch ends; the leaver and the stayer run together
            until(lambda: gate.sizes == [1, 2], what="the second batch")
            leaver.close()
            until(lambda: batcher.stats["abandoned"] == 1, what="the leaver given up")
            assert batcher.running == 2  # given up on, not killed: the batch goes on
            gate.release()
            answer = stayer.result()
            assert first.result().status_code == 200
        finally:
            gate.release(20)
    assert answer.status_code == 200 and answer.json()["batch_size"] == 2
    assert answer.json()["images"][0]["seed"] == 2
    assert batcher.stats["failed"] == 0 and batcher.stats["images"] == 3


# ---------------------------------------------------------------------------- drawing


def test_drawing_is_bounded_and_refused_when_its_queue_is_full(pipe, monkeypatch):
    held, release = threading.Semaphore(0), threading.Event()
    real_draw = sg2image.drawing.draw_graph

    def slow_draw(graph, size):
        held.release()
        assert release.wait(60)
        return real_draw(graph, size=size)

    monkeypatch.setattr(sg2image.drawing, "draw_graph", slow_draw)
    app = create_app(pipe, ServeSettings(**{**SETTINGS, "max_queue": 2}))
    lane, draw = app.state.lane, {"graph": GRAPH, "size": 128}
    with LoopbackServer(app) as server, ThreadPoolExecutor(3) as pool:
        url = server.url
        try:
            drawing = [pool.submit(httpx.post, url + "/api/draw", json=draw, timeout=60)]
            assert held.acquire(timeout=30)  # one on the lane's thread
            drawing += [pool.submit(httpx.post, url + "/api/draw", json=draw, timeout=60)]
            drawing += [pool.submit(httpx.post, url + "/api/draw", json=draw, timeout=60)]
            until(lambda: lane.waiting == 2, what="two drawings waiting")
            refused = httpx.post(url + "/api/draw", json=draw, timeout=60)
            # drawing is off the event loop and off the generation worker: both still answer
            assert httpx.get(url + "/api/health", timeout=10).json()["stats"]["other_rejected"]
            generated = httpx.post(url + "/api/generate", json=BODY, timeout=60)
        finally:
            release.set()
        answers = [f.result() for f in drawing]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert "busy" in refused.json()["detail"]
    assert generated.status_code == 200
    assert [a.status_code for a in answers] == [200] * 3
    assert all(a.headers["content-type"] == "image/png" for a in answers)


def test_drawing_limits_are_422_and_listed(server):
    def draw(graph, size=320):
        return httpx.post(server.url + "/api/draw", json={"graph": graph, "size": size})

    limits = httpx.get(server.url + "/api/vocabulary").json()["limits"]
    assert limits["max_label_chars"] == 32 and limits["max_draw_size"] == 512
    long_predicate = {"objects": ["a", "b"], "relationships": [[0, "p" * 33, 1]]}
    r = draw(long_predicate)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "graph", "relationships", 0, 1]
    assert draw({"objects": ["x" * 33]}).json()["detail"][0]["msg"] == "longer than 32 characters"
    assert draw(GRAPH, size=513).json()["detail"][0]["loc"] == ["body", "size"]
    assert draw({"objects": ["a"] * 17}).json()["detail"][0]["msg"] == (
        "17 objects, this model accepts at most 6"
    )
    rels = [[0, f"p{k}", 1] for k in range(65)]
    assert draw({"objects": ["a", "b"], "relationships": rels}).status_code == 422
    assert (
        draw({"objects": ["x" * 32, "b"], "relationships": [[0, "q" * 32, 1]]}).status_code == 200
    )


# ---------------------------------------------------------------------------- Host header


def test_only_local_host_names_are_answered(server, pipe):
    def status(host):
        return httpx.get(server.url + "/api/health", headers={"Host": host}).status_code

    port = server.url.rsplit(":", 1)[1]
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", "[::1]:8000", "LocalHost."):
        assert status(host) == 200, host
    r = httpx.get(server.url + "/api/health", headers={"Host": f"rebind.example:{port}"})
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "Host 'rebind.example' is not served here (this server answers to localhost, "
        "127.0.0.1, [::1]); to serve it, start the server with --allow-host rebind.example"
    )
    for host in ("localhost.rebind.example", "127.0.0.1.nip.io", "evil.localhost"):
        assert status(host) == 400, host
    # refused before the body is read: no work queued for a foreign page
    before = httpx.get(server.url + "/api/health").json()["stats"]["requests"]
    r = httpx.post(server.url + "/api/generate", json=BODY, headers={"Host": "rebind.example"})
    assert r.status_code == 400
    assert httpx.get(server.url + "/api/health").json()["stats"]["requests"] == before
    sock = socket.create_connection(("127.0.0.1", int(port)))  # HTTP/1.0 need not name a host
    sock.sendall(b"GET /api/health HTTP/1.0\r\n\r\n")
    answer = b"".join(iter(lambda: sock.recv(65536), b""))
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400") and b"no Host header" in answer

    named = create_app(pipe, ServeSettings(**SETTINGS, allow_hosts=("sg.example", "::2")))
    with LoopbackServer(named) as other:
        for host, code in [("sg.example", 200), ("[::2]:80", 200), ("localhost", 200)]:
            assert httpx.get(other.url, headers={"Host": host}).status_code == code, host
        assert httpx.get(other.url, headers={"Host": "other.example"}).status_code == 400
    anything = create_app(pipe, ServeSettings(**SETTINGS, allow_hosts=("*",)))
    with LoopbackServer(anything) as other:
        assert httpx.head(other.url, headers={"Host": "other.example"}).status_code == 200


def test_head_answers_like_get(server):
    for path in ("/", "/api/health"):
        r = httpx.head(server.url + path)
        assert r.status_code == 200 and r.content == b"", path


# ---------------------------------------------------------------------------- bodies


def post(server, path, body=None, content=None):
    headers = {"Content-Type": "application/json"}
    if content is None:
        content = json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers=headers, timeout=60)


def only_problem(response):
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    return problem["loc"], problem["msg"]


def test_deep_and_huge_json_get_a_located_422(server):
    for path in ("/api/generate", "/api/validate", "/api/draw"):
        loc, msg = only_problem(post(server, path, content=b"[" * 5000))
        assert (
            loc == ["body"]
            and msg == "JSON nested 5000 levels deep; at most 32 levels are accepted"
        )
    deep = b'{"graphs": [' + b"[" * 40 + b"]" * 40 + b"]}"
    assert only_problem(post(server, "/api/generate", content=deep))[0] == ["body"]
    seed = b'{"graphs": [{"objects": ["red circle"]}], "seed": ' + b"9" * 5000 + b"}"
    loc, msg = only_problem(post(server, "/api/generate", content=seed))
    assert loc == ["body", "seed"] and "more than 100 digits" in msg
    doc = b'[{"objects": ["a"], "relationships": [[0, "x", ' + b"1" * 5000 + b"]]}]"
    loc, _ = only_problem(post(server, "/api/validate", content=doc))
    assert loc == ["body", 0, "relationships", 0, 2]
    # a long float is a number Python reads; the schema judges it
    loc, _ = only_problem(post(server, "/api/generate", content=seed.replace(b"99}", b".9}")))
    assert loc == ["body", "seed"]


def test_numbers_are_strict(server):
    for field, value in [("steps", "2"), ("steps", 2.5), ("steps", True), ("seed", "1")]:
        loc, _ = only_problem(post(server, "/api/generate", {**BODY, field: value}))
        assert loc == ["body", field], (field, value)
    # an integer as JSON Schema has it: 2.0 is 2
    assert post(server, "/api/generate", {**BODY, "steps": 2.0}).json()["steps"] == 2
    assert only_problem(post(server, "/api/generate", {**BODY, "guidance": "2"}))[0] == [
        "body",
        "guidance",
    ]
    assert post(server, "/api/generate", {**BODY, "guidance": 2}).status_code == 200
    assert only_problem(post(server, "/api/draw", {"graph": GRAPH, "size": "320"}))[0] == [
        "body",
        "size",
    ]


def test_answers_echo_at_most_80_characters_of_a_value(server):
    x, y = "x" * 120_000, "y" * 60_000
    r = post(server, "/api/validate", [{"objects": [x]}, {"objects": ["red circle", y]}])
    assert r.status_code == 200 and len(r.content) < 2_000, len(r.content)
    data = r.json()
    assert data["problems"] == [
        f"scenes[0].objects[0]: unknown object '{'x' * 80}…'",
        f"scenes[1].objects[1]: unknown object '{'y' * 80}…'",
    ]
    assert data["errors"][1] == {
        "loc": ["body", 1, "objects", 1],
        "msg": f"unknown object '{'y' * 80}…'",
        "type": "graph",
    }
    loc, msg = only_problem(post(server, "/api/generate", {"graphs": [{"objects": [x]}]}))
    assert msg == f"unknown object '{'x' * 80}…'"
    loc, msg = only_problem(post(server, "/api/generate", {**BODY, "k" * 100_000: 1}))
    assert loc == ["body", "k" * 79 + "…"] and msg == "Extra inputs are not permitted"
    r = post(server, "/api/validate", {"objects": ["red circle"], "k" * 100_000: 1})
    assert len(r.content) < 2_000 and r.json()["errors"][0]["loc"] == ["body", "k" * 79 + "…"]


def test_many_problems_are_bounded_in_work_and_answer(server):
    # one scene far over the object limit: its count, not 20,000 fuzzy searches
    r = post(server, "/api/validate", {"objects": ["red circl"] * 20_000})
    assert r.json()["problems"] == ["objects: 20000 objects, this model accepts at most 6"]
    # 3,000 scenes with a bad name each: checking stops after 50 problems
    r = post(server, "/api/validate", [{"objects": ["red circl"]}] * 3000)
    problems = r.json()["problems"]
    assert len(problems) == 51 and len(r.content) < 20_000
    assert problems[49].startswith("scenes[49].objects[0]: unknown object 'red circl'")
    assert problems[50] == "2950 more scene(s) not checked: fix the problems above first"
