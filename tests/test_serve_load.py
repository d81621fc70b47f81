"""The load benchmark's parts (benchmarks/serve_load.py): its clients against a real server on
loopback count every request as an image, a rejection or a failure; its report replaces only
its own section of docs/benchmarks.md."""

import asyncio
import importlib.util
import time
from argparse import Namespace
from pathlib import Path

import pytest
from serve_fixtures import GRAPH, LoopbackServer, tiny_pipeline

from sg2image.serve import ServeSettings, create_app

pytestmark = pytest.mark.usefixtures("one_thread")

spec = importlib.util.spec_from_file_location(
    "serve_load", Path(__file__).parents[1] / "benchmarks" / "serve_load.py"
)
serve_load = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serve_load)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.mktemp("load"))


def load(url, clients, seconds=1.0):
    args = Namespace(steps=2, guidance=2.0, server_timeout=30, backoff=0.05)
    log = []

    async def main():
        deadline = time.perf_counter() + seconds
        jobs = (serve_load.client(k, url, [GRAPH], args, deadline, log) for k in range(clients))
        await asyncio.gather(*jobs)

    asyncio.run(main())
    return log


def test_every_request_is_an_image_or_a_clear_rejection(pipe):
    relaxed = create_app(pipe, ServeSettings(default_steps=2, max_steps=4, max_batch=4))
    with LoopbackServer(relaxed) as server:
        log = load(server.url, clients=3)
    assert log and {e["outcome"] for e in log} == {"image"}
    assert max(e["batch_size"] for e in log) > 1  # 3 clients, one worker: batches form

    tight = create_app(pipe, ServeSettings(default_steps=2, max_batch=1, max_queue=1))
    with LoopbackServer(tight) as server:
        log = load(server.url, clients=6)
    outcomes = [e["outcome"] for e in log]
    assert "image" in outcomes and "rejected" in outcomes and "failed" not in outcomes
    assert all("busy" in e["detail"] for e in log if e["outcome"] == "rejected")


def test_report_touches_only_its_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    shapes = "<!-- shapes-bench:start -->\n## Shapes adherence benchmark\n\nrows\n"
    docs.write_text(f"# Benchmarks\n\n{shapes}<!-- shapes-bench:end -->\n")
    row = dict(
        clients=4, max_batch=8, dynamic_batching=True, images_per_s=1.5, p50_s=1.0, p99_s=2.0,
        mean_batch=2.5, requests=30, rejected=0, failed=0, lost=0,
    )  # fmt: skip
    data = dict(
        model="m", machine=serve_load.machine(), steps=20, guidance=2.0, duration_s=30,
        queue=16, server_timeout_s=60, backoff_s=0.5, command="python x", date="d", results=[row],
    )  # fmt: skip
    serve_load.write_section(docs, serve_load.markdown(data))
    serve_load.write_section(docs, serve_load.markdown({**data, "model": "again"}))
    text = docs.read_text()
    assert text.count("## Serving (sg2image serve)") == 1 and "model: again" in text
    assert shapes in text and text.count("<!-- shapes-bench:end -->") == 1
    assert "| 4 | on (max 8) | 1.50 | 1.00 s | 2.00 s | 2.5 | 30 | 0 | 0 |" in text
    assert serve_load.percentile([3, 1, 2, 4], 50) == 2 and serve_load.percentile([], 99) is None
