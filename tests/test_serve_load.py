"""The load benchmark's parts (benchmarks/serve_load.py): its clients against a real server on
loopback count every request as an image, a rejection or a failure, and send steps and
guidance only when asked (else the model's default sampler answers); the offline batch
throughput is measured in the same run and each row is reported as a share of it; its report
replaces only its own section of docs/benchmarks.md, old results included."""

import asyncio
import copy
import importlib.util
import json
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


@pytest.fixture(scope="module")
def fast_pipe(tmp_path_factory):
    """A tiny pipeline whose distilled student (2 steps, guidance 2 learnt) is its default."""
    from sg2image.training.config import DistillConfig
    from sg2image.training.distill import student_scheduler

    pipe = tiny_pipeline(tmp_path_factory.mktemp("fast"))
    lcm = student_scheduler(pipe.scheduler.config, DistillConfig())
    pipe.set_student(copy.deepcopy(pipe.unet), lcm, 2, 2.0)
    return pipe


def load(url, clients, seconds=1.0, steps=2, guidance=2.0):
    args = Namespace(steps=steps, guidance=guidance, server_timeout=30, backoff=0.05)
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


def test_requests_send_steps_and_guidance_only_when_given(fast_pipe):
    """Neither given: the body has neither and the student answers (the model's default);
    both given: both are sent and the full sampler answers with them."""
    default = Namespace(steps=None, guidance=None)
    assert serve_load.request_body(GRAPH, 7, default) == {"graphs": [GRAPH], "seed": 7}
    asked = serve_load.request_body(GRAPH, 7, Namespace(steps=3, guidance=1.5))
    assert (asked["steps"], asked["guidance"]) == (3, 1.5)
    only_steps = serve_load.request_body(GRAPH, 7, Namespace(steps=3, guidance=None))
    assert "guidance" not in only_steps and only_steps["steps"] == 3

    app = create_app(fast_pipe, ServeSettings(default_steps=2, max_steps=4, max_batch=4))
    with LoopbackServer(app) as server:
        fast = load(server.url, clients=1, seconds=0.3, steps=None, guidance=None)
        full = load(server.url, clients=1, seconds=0.3, steps=3, guidance=2.0)
    assert fast and {e["outcome"] for e in fast + full} == {"image"}
    assert serve_load.distinct(e["sampler"] for e in fast) == [
        {"name": "fast", "steps": 2, "guidance": 2.0}
    ]
    assert serve_load.distinct(e["sampler"] for e in full) == [
        {"name": "dpm++", "steps": 3, "guidance": 2.0}
    ]


def served_row(clients, max_batch, images_per_s, share=None, sampler=None):
    row = dict(
        clients=clients, max_batch=max_batch, dynamic_batching=max_batch > 1,
        images_per_s=images_per_s, p50_s=1.0, p99_s=2.0, mean_batch=2.5, requests=30,
        rejected=0, failed=0, lost=0,
    )  # fmt: skip
    if share is not None:
        row["share_of_offline"] = share
    if sampler is not None:
        row["samplers"] = [sampler]
    return row


def old_data(**changes):
    """A results JSON as the script wrote it before the sampler and the offline number."""
    data = dict(
        model="m", machine=serve_load.machine(), steps=20, guidance=2.0, duration_s=30,
        queue=16, server_timeout_s=60, backoff_s=0.5, command="python x", date="d",
        results=[served_row(4, 8, 1.5)],
    )  # fmt: skip
    return {**data, **changes}


def test_report_touches_only_its_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    shapes = "<!-- shapes-bench:start -->\n## Shapes adherence benchmark\n\nrows\n"
    after = "\n\nA paragraph after the section.\n"
    docs.write_text(f"# Benchmarks\n\n{shapes}<!-- shapes-bench:end -->\n")
    serve_load.write_section(docs, serve_load.markdown(old_data()))
    docs.write_text(docs.read_text().rstrip("\n") + after)
    serve_load.write_section(docs, serve_load.markdown(old_data(model="again")))
    text = docs.read_text()
    assert text.count("## Serving (sg2image serve)") == 1 and "model: again" in text
    assert shapes in text and text.count("<!-- shapes-bench:end -->") == 1
    assert text.endswith("<!-- serve-bench:end -->" + after)  # the rest is left as it was
    assert "| 4 | on (max 8) | 1.50 | n/a | 1.00 s | 2.00 s | 2.5 | 30 | 0 | 0 |" in text
    assert serve_load.percentile([3, 1, 2, 4], 50) == 2 and serve_load.percentile([], 99) is None


def test_docs_only_rewrites_an_old_json_with_na(tmp_path):
    """A JSON from before the sampler and the offline number: the section is written with
    the steps it sent, and n/a where the offline measurement would be."""
    out, docs = tmp_path / "serve_load.json", tmp_path / "benchmarks.md"
    out.write_text(json.dumps(old_data()))
    assert serve_load.main(["--docs-only", "--out", str(out), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "one image, 20 steps (DPM-Solver++), guidance 2.0;" in text
    assert "| share of offline |" in text and "| 1.50 | n/a |" in text
    assert "Offline throughput: n/a" in text and "Goal:" not in text


def test_goal_is_judged_on_the_best_dynamic_batching_row():
    fast = {"name": "fast", "steps": 2, "guidance": 2.0}
    offline = {"batch": 8, "seconds": 20.1, "torch_threads": 1, "sampler": fast}
    data = old_data(
        steps=None, guidance=None, sampler=fast, offline_images_per_s=10.0, offline_batch=8,
        offline=offline,
        results=[served_row(4, 8, 7.0, 0.7), served_row(32, 8, 8.4, 0.84),
                 served_row(32, 1, 9.5, 0.95)],
    )  # fmt: skip
    text = serve_load.markdown(data)
    assert (
        "one image, the model's default sampler: the distilled student, 2 steps "
        "(2 UNet evaluations), guidance 2 folded in;" in text
    )
    assert "| 32 | on (max 8) | 8.40 | 84% |" in text and "| 32 | off | 9.50 | 95% |" in text
    assert "10.00 images/s in batches of 8" in text and "measured in the same run" in text
    assert "row (32 clients, max batch 8) reaches 84.0%: it meets it." in text
    slow = [served_row(4, 8, 7.0, 0.7), served_row(4, 1, 9.0, 0.9)]
    assert "reaches 70.0%: it falls short of it." in serve_load.markdown({**data, "results": slow})
    full = {"name": "dpm++", "steps": 20, "guidance": 2.0}
    text = serve_load.markdown({**data, "sampler": full, "steps": 20})
    assert "one image, 20 steps (DPM-Solver++), guidance 2.0;" in text
    assert "**It sampled with the distilled student" in text  # offline differs: said so


def test_offline_throughput_is_measured_in_the_same_run(fast_pipe, tmp_path, monkeypatch):
    """The whole run, its served rows faked: the offline worker (a real subprocess) samples
    the model's default, the student, in batches of the largest --batch; the JSON holds its
    images/s and each row's share of it, the markdown the share column and the goal."""
    fast_pipe.save_pretrained(tmp_path / "pipe")
    fast = {"name": "fast", "steps": 2, "guidance": 2.0}

    async def fake_rows(model, args, graphs, clients, max_batch, tmp):
        assert (args.steps, args.guidance) == (None, None)
        return served_row(clients, max_batch, 0.5 * max_batch, sampler=fast)

    monkeypatch.setattr(serve_load, "run_config", fake_rows)
    out, docs = tmp_path / "serve_load.json", tmp_path / "benchmarks.md"
    argv = ["--model", str(tmp_path / "pipe"), "--clients", "2", "--batch", "4,1"]
    argv += ["--duration", "0.2", "--offline-duration", "0.2"]
    argv += ["--out", str(out), "--docs", str(docs)]
    assert serve_load.main(argv) == 0
    data = json.loads(out.read_text())
    offline = data["offline_images_per_s"]
    assert offline > 0 and data["offline_batch"] == 4 and data["offline"]["images"] >= 4
    assert data["offline"]["sampler"] == data["sampler"] == fast
    assert data["offline"]["torch_threads"] == 1  # OMP_NUM_THREADS=1, as the server gets it
    runs = data["offline"]["runs"]  # before the first row and after each of the two
    assert len(runs) == 3 and all(r > 0 for r in runs)
    assert offline == round(sum(runs) / 3, 3)
    around = [(runs[0] + runs[1]) / 2, (runs[1] + runs[2]) / 2]
    assert [r["offline_images_per_s"] for r in data["results"]] == [round(a, 3) for a in around]
    shares = [r["share_of_offline"] for r in data["results"]]
    assert shares == [round(2.0 / around[0], 3), round(0.5 / around[1], 3)]
    text = docs.read_text()
    assert f"| 2 | on (max 4) | 2.00 | {shares[0]:.0%} |" in text
    assert f"{offline:.2f} images/s in batches of 4" in text
    assert "measured 3 times in the same run" in text
    verdict = "meets it" if shares[0] >= 0.8 else "falls short of it"
    assert f"reaches {shares[0]:.1%}: it {verdict}." in text


def test_cores_are_parsed_and_reported(monkeypatch):
    """--server-cores takes core numbers this machine has; the report says where the server
    and the clients ran (results without cores: they shared them)."""
    assert serve_load.parse_cores("0", "--server-cores") == {0}
    for bad in ("x", "", "9999"):
        with pytest.raises(SystemExit, match="--server-cores"):
            serve_load.parse_cores(bad, "--server-cores")
    assert serve_load.placement({}) == "server and clients share them, on loopback"
    split = {"server_cores": [1], "client_cores": [0]}
    assert "server (and the offline measurement) on core(s) [1]" in serve_load.placement(split)
    assert "the clients on core(s) [0]" in serve_load.placement(split)
    monkeypatch.setattr(serve_load, "SERVER_CORES", {0})
    m = serve_load.machine()
    assert m["server_cores"] == [0] and m["cores_used"] >= 1
    row = served_row(32, 8, 30.0, share=0.8)
    cpu = {"event_loop_s": 0.8, "other_threads_s": 18.75}
    text = serve_load.markdown(old_data(results=[{**row, "client_cpu_s": 4.5, "server_cpu": cpu}]))
    assert "| 4.50 s | 0.80 / 18.75 s |" in text and "clients' CPU" in text
    assert "| n/a | n/a |" in serve_load.markdown(old_data())  # older results: not measured


def test_server_cpu_splits_the_main_thread_from_the_others():
    """Per-thread CPU from /proc: this process's threads, its main thread (tid == pid) apart."""
    import os
    import threading

    pid = os.getpid()
    before = serve_load.thread_cpu(pid)
    if before is None:
        pytest.skip("no /proc here")
    assert pid in before and all(v >= 0 for v in before.values())
    spun, read = threading.Event(), threading.Event()

    def spin():  # 0.2 s of its own CPU, however busy the machine is; alive until read
        start = time.thread_time()
        while time.thread_time() - start < 0.2:
            pass
        spun.set()
        read.wait(10)

    worker = threading.Thread(target=spin)  # /proc drops a thread that has ended
    worker.start()
    assert spun.wait(30)
    during = serve_load.thread_cpu(pid)
    read.set()
    worker.join()
    split = serve_load.server_cpu(pid, before, during)
    # the spinning thread's 0.2 s (ticks of 10 ms), not the waiting main one
    others, main = split["other_threads_s"], split["event_loop_s"]
    assert others >= 0.15 and others > main, split
    assert serve_load.server_cpu(pid, None, during) is None
    assert serve_load.thread_cpu(2**22 + 12345) is None  # no such process
