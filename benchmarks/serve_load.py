"""Load benchmark of `sg2image serve`: N concurrent clients on loopback for a bounded time.

Each configuration starts a real server (`sg2image serve`, a subprocess), warms it up, then runs
N closed-loop clients for D seconds: each sends one generate request (one Shapes test graph,
one image), waits for the answer, and sends the next; after a 503 it waits `--backoff`
seconds. Reported per configuration: images per second, p50 / p99 latency of the answered
requests (waiting included), rejected (503 + Retry-After) and failed requests, the batch
sizes the server actually ran, and the sampler its answers report. Every request must end in
a PNG or a clear rejection: any other outcome counts as failed, and the script exits non-zero
if one happens.

Requests send `steps` and `guidance` only when --steps / --guidance are given: without them
the server samples with the model's default sampler (the shipped model's: finish, 4 UNet
evaluations; a distilled student where the model makes that the default).

Runs with and without dynamic batching (--max-batch 8 and 1) at each client count, between
offline measurements in the same run: the pipeline alone, in a subprocess started as the server
is (so with its environment, thread setting and cores), generating the same kind of requests in
batches of the largest --batch value for about --offline-duration seconds, once before the
first row and once after each row. Each row's images/s is reported as a share of the mean of
the two offline measurements around it (the machine's speed drifts by 10-20% over minutes on
a shared VM, so one measurement at the start does not hold for the last row); the goal is
served images/s >= 80% of offline with dynamic batching.

With --server-cores the server and the offline process run on those cores and the clients on
the others, as they would on other machines (default: all share this script's cores).

    python benchmarks/serve_load.py                        # the shipped model, if present
    python benchmarks/serve_load.py --model shapes-arch    # random weights, shipped architecture
    python benchmarks/serve_load.py --model tiny --duration 5 --clients 4   # a quick look
    python benchmarks/serve_load.py --steps 20 --guidance 2  # the full sampler, as asked
    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --server-cores 1   # clients on core 0

Writes benchmarks/results/serve_load.json and the "## Serving (sg2image serve)" section of
docs/benchmarks.md (only that section; the file is created if missing).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "sg2image" / "assets" / "shapes-pipeline"
HEADING = "## Serving (sg2image serve)"
START, END = "<!-- serve-bench:start -->", "<!-- serve-bench:end -->"
GOAL = 0.8  # served images/s with dynamic batching, as a share of offline batch throughput
SCHEDULER_NAMES = {
    "dpm++": "DPM-Solver++",
    "unipc": "UniPC",
    "ddim": "DDIM",
    "lms": "LMS",
    "euler": "Euler",
    "ddpm": "DDPM",
}


# ----------------------------------------------------------------------------- models


def build_model(kind: str, folder: Path) -> Path:
    """A pipeline folder: 'tiny' (the tests' model) or 'shapes-arch' (the shipped model's
    architecture and sizes with random weights: the same compute per image)."""
    import torch

    from sg2image.data.shapes import shapes_vocab
    from sg2image.models.base import BaseComponents, build_tiny_base, load_base
    from sg2image.pipeline import pipeline_from_base

    torch.manual_seed(0)
    if kind == "tiny":
        base = load_base(build_tiny_base(folder / "base"))
        enc = dict(embed_dim=16, hidden_dim=16, triple_hidden_dim=16, num_layers=1, global_dim=16)
        pipe = pipeline_from_base(base, shapes_vocab(), enc, dict(max_triples=8), max_objects=5)
    elif kind == "shapes-arch":
        import sg2image.models.shapes_base as sb
        from sg2image.training.base_model import ShapesBaseConfig
        from sg2image.training.presets import shapes_method_config

        cfg, method = ShapesBaseConfig(), shapes_method_config(folder, folder, folder)
        tokenizer = sb.build_tokenizer()
        text_encoder = sb.clip_text_encoder(sb.build_clip(tokenizer, cfg.clip.size))
        vae = sb.build_vae(cfg.vae.size)
        latent = method.resolution // 2 ** (len(cfg.vae.size.channels) - 1)
        unet = sb.build_unet(cfg.unet.size, cfg.clip.size.text_dim, latent)
        scheduler = sb.build_noise_scheduler(cfg.unet.prediction_type, cfg.unet.beta_schedule)
        base = BaseComponents(unet, scheduler, text_encoder, tokenizer, vae)
        pipe = pipeline_from_base(
            base,
            shapes_vocab(),
            dict(method.encoder),
            dict(method.conditioner),
            max_objects=method.max_objects,
        )
    else:
        raise SystemExit(f"--model {kind!r}: a pipeline folder, 'tiny' or 'shapes-arch'")
    pipe.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


# ----------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The cores the server and the offline measurement run on (--server-cores; None: this
# script's own). Set once in main, before any subprocess starts.
SERVER_CORES: set[int] | None = None


def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    """The server and the offline measurement start alike: this interpreter, this environment
    (OMP_NUM_THREADS included) and the same cores (SERVER_CORES), so both run torch on the
    same threads."""
    cores = SERVER_CORES

    def pin() -> None:
        if cores is not None:
            os.sched_setaffinity(0, cores)

    return subprocess.Popen(
        cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=pin
    )


def parse_cores(text: str, flag: str) -> set[int]:
    """'1' or '0,1' -> {1} / {0, 1}, each a core this machine has."""
    try:
        cores = {int(c) for c in text.split(",") if c.strip()}
    except ValueError:
        raise SystemExit(f"{flag} {text!r}: expected core numbers such as 1 or 0,1") from None
    have = os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))
    if not cores or not cores <= have:
        raise SystemExit(f"{flag} {text!r}: this machine has cores {sorted(have)}")
    return cores


def start_server(model: Path, port: int, args, max_batch: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sg2image.cli", "serve", "--model", str(model)]
    cmd += ["--port", str(port), "--max-batch", str(max_batch), "--max-queue", str(args.queue)]
    cmd += ["--timeout", str(args.server_timeout)]
    if args.steps is not None:
        cmd += ["--max-steps", str(max(args.steps, 1))]
    return spawn(cmd, log)


async def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(int(seconds / 0.25)):
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            try:
                if (await c.get(f"{url}/api/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    raise SystemExit("the server did not come up")


# ----------------------------------------------------------------------------- clients


def is_png_answer(response: httpx.Response) -> bool:
    try:
        images = response.json()["images"]
        return len(images) == 1 and base64.b64decode(images[0]["png"])[:8] == b"\x89PNG\r\n\x1a\n"
    except (ValueError, KeyError, TypeError):
        return False


def request_body(graph: dict, seed: int, args) -> dict:
    """One generate request. Steps and guidance only when asked for: a request that names
    neither gets the model's default sampler (SceneGraphPipeline.default_sampler)."""
    body = {"graphs": [graph], "seed": seed}
    if args.steps is not None:
        body["steps"] = args.steps
    if args.guidance is not None:
        body["guidance"] = args.guidance
    return body


def sampler_of(answer: dict) -> dict:
    """The sampler an answer reports (as the server resolved the request's fields)."""
    return {"name": answer["sampler"], "steps": answer["steps"], "guidance": answer["guidance"]}


def distinct(samplers) -> list[dict]:
    return [dict(t) for t in sorted({tuple(s.items()) for s in samplers})]


def http_client(args) -> httpx.AsyncClient:
    """One client's connection pool. Building one takes about 30 ms (its TLS context, unused
    on plain http), so a row builds its clients before its clock starts."""
    return httpx.AsyncClient(timeout=httpx.Timeout(args.server_timeout + 30))


async def client(
    k: int, url: str, graphs: list, args, deadline: float, log: list, http=None
) -> None:
    """Client k's closed loop until ``deadline``, each request's outcome appended to ``log``;
    on ``http`` (an AsyncClient, closed at the end) or a client of its own."""
    async with http or http_client(args) as c:
        n = 0
        while time.perf_counter() < deadline:
            body = request_body(graphs[(k * 7919 + n) % len(graphs)], k * 100_000 + n, args)
            n += 1
            start = time.perf_counter()
            entry = {"client": k, "start": start}
            try:
                r = await c.post(f"{url}/api/generate", json=body)
                entry["status"] = r.status_code
                if r.status_code == 200 and is_png_answer(r):
                    entry["outcome"] = "image"
                    entry["batch_size"] = r.json()["batch_size"]
                    entry["sampler"] = sampler_of(r.json())
                elif r.status_code == 503 and r.headers.get("retry-after"):
                    entry["outcome"] = "rejected"
                    entry["detail"] = r.json().get("detail", "")
                else:
                    entry["outcome"] = "failed"
                    entry["detail"] = r.text[:200]
            except httpx.HTTPError as e:
                entry["outcome"] = "failed"
                entry["detail"] = f"{type(e).__name__}: {e}"
            entry["end"] = time.perf_counter()
            log.append(entry)
            if entry["outcome"] == "rejected":
                await asyncio.sleep(args.backoff)


def thread_cpu(pid: int) -> dict[int, float] | None:
    """CPU seconds (user + system) of each thread of process ``pid``, from /proc; None where
    there is no /proc (not Linux) or the process is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None
    return out


def server_cpu(pid: int, before: dict | None, after: dict | None) -> dict | None:
    """The server's CPU time over a row: its main thread (the event loop: HTTP, validation,
    JSON, base64) and the others (the generation worker, which runs the pipeline)."""
    if before is None or after is None:
        return None
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main = spent.pop(pid, 0.0)
    return {"event_loop_s": round(main, 2), "other_threads_s": round(sum(spent.values()), 2)}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def run_config(model: Path, args, graphs: list, clients: int, max_batch: int, tmp: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(model, port, args, max_batch, tmp / f"server_{clients}_{max_batch}.log")
    try:
        await wait_healthy(url, proc)
        warm = []
        await client(0, url, graphs, args, time.perf_counter() + args.warmup, warm)
        async with httpx.AsyncClient() as c:
            before = (await c.get(f"{url}/api/health")).json()["stats"]
        threads_before = thread_cpu(proc.pid)
        log: list[dict] = []
        pools = [http_client(args) for _ in range(clients)]  # before the clock: not the server's
        start, cpu_start = time.perf_counter(), time.process_time()
        deadline = start + args.duration
        await asyncio.gather(
            *(client(k, url, graphs, args, deadline, log, pools[k]) for k in range(clients))
        )
        elapsed = time.perf_counter() - start  # includes the answers still due at the deadline
        client_cpu = time.process_time() - cpu_start  # the clients' own work (this process)
        threads = server_cpu(proc.pid, threads_before, thread_cpu(proc.pid))
        async with httpx.AsyncClient() as c:
            after = (await c.get(f"{url}/api/health")).json()["stats"]
    finally:
        proc.terminate()
        proc.wait(30)
    images = [e for e in log if e["outcome"] == "image"]
    rejected = [e for e in log if e["outcome"] == "rejected"]
    failed = [e for e in log if e["outcome"] == "failed"]
    latencies = [e["end"] - e["start"] for e in images]
    batches = after["batches"] - before["batches"]
    made = after["images"] - before["images"]
    return {
        "clients": clients,
        "max_batch": max_batch,
        "dynamic_batching": max_batch > 1,
        "seconds": round(elapsed, 2),
        "client_cpu_s": round(client_cpu, 2),
        "server_cpu": threads,  # the server's threads over the row (None: no /proc)
        "requests": len(log),
        "images": len(images),
        "rejected": len(rejected),
        "failed": len(failed),
        "lost": len(log) - len(images) - len(rejected) - len(failed),
        "images_per_s": round(len(images) / elapsed, 3),
        "p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "mean_batch": round(made / batches, 2) if batches else None,
        "largest_batch": max((e["batch_size"] for e in images), default=None),
        "samplers": distinct(e["sampler"] for e in images),  # normally one
        "failures": sorted({e.get("detail", "") for e in failed})[:5],
    }


# ----------------------------------------------------------------------------- offline


def offline_throughput(model: Path, args, graphs: list, batch: int, tmp: Path, k: int = 0) -> dict:
    """Images/s of the pipeline alone, in batches of ``batch``: this script's offline worker
    in a subprocess started as the server is (see ``spawn``); ``k`` numbers its files."""
    spec, out = tmp / f"offline_spec_{k}.json", tmp / f"offline_{k}.json"
    log = tmp / f"offline_{k}.log"
    spec.write_text(
        json.dumps(
            {
                "model": str(model),
                "graphs": graphs,
                "batch": batch,
                "duration": args.offline_duration,
                "steps": args.steps,
                "guidance": args.guidance,
                "out": str(out),
            }
        )
    )
    worker = [sys.executable, str(Path(__file__).resolve()), "--offline-worker", str(spec)]
    proc = spawn(worker, log)
    try:
        code = proc.wait(args.offline_duration + 900)  # loading and a warm-up batch first
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = "a timeout"
    if code != 0 or not out.is_file():
        tail = log.read_text()[-2000:] if log.is_file() else ""
        raise SystemExit(f"the offline measurement ended with {code}:\n{tail}")
    return json.loads(out.read_text())


def offline_worker(spec_path: Path) -> int:
    """The offline measurement itself (run in its own process by offline_throughput): one
    warm-up batch, then batches for about ``duration`` seconds; the same graphs, sampler
    fields and per-image seeded generators as the server's requests get."""
    import torch

    from sg2image.pipeline import SCHEDULERS, load_pipeline

    spec = json.loads(spec_path.read_text())
    pipe = load_pipeline(spec["model"])
    graphs, batch = spec["graphs"], spec["batch"]
    fields = {}
    if spec["steps"] is not None:
        fields["num_inference_steps"] = spec["steps"]
    if spec["guidance"] is not None:
        fields["guidance_scale"] = spec["guidance"]

    def run(k: int) -> None:
        seeds = range(k * batch, (k + 1) * batch)
        pipe(
            [graphs[s % len(graphs)] for s in seeds],
            generator=[torch.Generator().manual_seed(s) for s in seeds],
            **fields,
        )

    run(0)
    done, start = 0, time.perf_counter()
    while True:
        done += 1
        run(done)
        elapsed = time.perf_counter() - start
        if elapsed >= spec["duration"]:
            break
    name, steps, guidance = pipe.resolve_sampler(None, spec["steps"], spec["guidance"])
    if name == "fast":  # resolve_sampler gives 1.0: the student's guidance is built in
        guidance = pipe.config.fast_guidance
    elif name == "full":  # named as the server names its full sampler
        kind = type(pipe.scheduler)
        name = next((n for n, c in SCHEDULERS.items() if c is kind), kind.__name__)
    result = {
        "images_per_s": round(done * batch / elapsed, 3),
        "batch": batch,
        "images": done * batch,
        "seconds": round(elapsed, 2),
        "torch_threads": torch.get_num_threads(),
        "sampler": {"name": name, "steps": int(steps), "guidance": float(guidance)},
    }
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- report


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    clients = sorted(os.sched_getaffinity(0))
    server = sorted(SERVER_CORES) if SERVER_CORES is not None else clients
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "cores_used": len(set(clients) | set(server)),
        "server_cores": server,  # the server's and the offline measurement's
        "client_cores": clients,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }


# The cores this script was started on, before --server-cores moves its clients off the
# server's: what its command line (taskset) reproduces.
STARTED_ON = os.sched_getaffinity(0)


def command_line(argv: list[str]) -> str:
    """This run's command, with the thread and core settings it was started under."""
    prefix = ""
    if os.environ.get("OMP_NUM_THREADS"):
        prefix += f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
    cores = sorted(STARTED_ON)
    if len(cores) < (os.cpu_count() or 0):
        prefix += f"taskset -c {','.join(map(str, cores))} "
    return prefix + "python benchmarks/serve_load.py " + shlex.join(argv)


def shown_command(command: str) -> str:
    """The command without its --note text (which the report prints anyway)."""
    parts = shlex.split(command)
    if "--note" in parts:
        k = parts.index("--note")
        parts[k : k + 2] = ["--note", "..."]
    return shlex.join(parts)


def sampler_words(sampler: dict) -> str:
    if sampler["name"] == "fast":  # no CFG: one UNet evaluation a step
        steps = sampler["steps"]
        return (
            f"the distilled student, {steps} steps ({steps} UNet evaluations), "
            f"guidance {sampler['guidance']:g} folded in"
        )
    if sampler["name"] == "finish":  # a draft (1 or 2 steps), a guided step (2 evaluations)
        draft = (
            "the distilled student's 2-step draft" if sampler["steps"] == 3 else "an unguided draft"
        )
        return (
            f"the finish sampler ({draft}, then one guided step: {sampler['steps'] + 1} UNet "
            f"evaluations), guidance {sampler['guidance']:g}"
        )
    name = SCHEDULER_NAMES.get(sampler["name"], sampler["name"])
    return f"{sampler['steps']} steps ({name}), guidance {sampler['guidance']}"


def describe_sampler(data: dict) -> str:
    """The sampler of the requests, as their answers report it."""
    if "sampler" not in data:  # a JSON from before it was recorded: those runs sent both fields
        return f"{data['steps']} steps (DPM-Solver++), guidance {data['guidance']}"
    if data["sampler"] is None:
        return "several samplers (see the JSON)"
    text = sampler_words(data["sampler"])
    if data.get("steps") is None and data.get("guidance") is None:
        return f"the model's default sampler: {text}"
    return text


def server_split(cpu: dict | None) -> str:
    if not cpu:
        return "n/a"
    return f"{cpu['event_loop_s']:.2f} / {cpu['other_threads_s']:.2f} s"


def share(row: dict) -> str:
    value = row.get("share_of_offline")
    return "n/a" if value is None else f"{value:.0%}"


def offline_lines(data: dict) -> list[str]:
    """The offline number and whether the best dynamic-batching row meets the goal."""
    offline = data.get("offline_images_per_s")
    if offline is None:
        return ["Offline throughput: n/a (not measured in the run these rows come from)."]
    details = data.get("offline") or {}
    threads = details.get("torch_threads")
    runs = details.get("runs")
    if runs:  # measured before the first row and after each one
        when = (
            f"measured {len(runs)} times in the same run, {details['seconds_each']:g} s each "
            f"after a warm-up batch, before the first row and after each row (from "
            f"{min(runs):.2f} to {max(runs):.2f} images/s; the mean is shown). Each row's "
            "share is of the mean of the two measurements around it"
        )
    else:
        when = (
            f"measured in the same run over {details.get('seconds', data['duration_s']):g} s "
            "after a warm-up batch"
        )
    lines = [
        f"Offline, the pipeline alone generates {offline:.2f} images/s in batches of "
        f"{data['offline_batch']} (the same graphs and sampler, in a process started as the "
        "server is: its environment, thread setting and cores"
        + (f", {threads} torch thread(s)" if threads else "")
        + f"), {when}."
    ]
    ran, served = details.get("sampler"), data.get("sampler")
    if ran and served and ran != served:
        lines[0] += (
            f" **It sampled with {sampler_words(ran)}, the server with "
            f"{sampler_words(served)}: the shares compare different work.**"
        )
    measured = [r for r in data["results"] if r.get("share_of_offline") is not None]
    rows = [r for r in measured if r["dynamic_batching"]]
    if not rows:
        lines.append(f"Goal: served images/s >= {GOAL:.0%} of offline with dynamic batching; "
                     "no dynamic-batching row to judge it by.")  # fmt: skip
        return lines
    best = max(rows, key=lambda r: r["share_of_offline"])
    verdict = "meets it" if best["share_of_offline"] >= GOAL else "falls short of it"
    lines.append(
        f"Goal: served images/s >= {GOAL:.0%} of offline with dynamic batching. The best "
        f"dynamic-batching row ({best['clients']} clients, max batch {best['max_batch']}) "
        f"reaches {best['share_of_offline']:.1%}: it {verdict}."
    )
    return lines


def placement(m: dict) -> str:
    """Where the server and the clients ran (older results name no cores: they shared them)."""
    server, clients = m.get("server_cores"), m.get("client_cores")
    if server is None or server == clients:
        return "server and clients share them, on loopback"
    if set(server) & set(clients):
        return f"server on core(s) {server}, clients on core(s) {clients}, on loopback"
    return (
        f"the server (and the offline measurement) on core(s) {server}, the clients on "
        f"core(s) {clients}, on loopback"
    )


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [
        HEADING,
        "",
        f"Load test of the HTTP API (`benchmarks/serve_load.py`), model: {data['model']}.",
        f"Machine: {m['cpu']}, {m['cores_used']} of {m['cores_visible']} cores "
        f"(OMP_NUM_THREADS={m['omp_num_threads']}); {placement(m)}.",
        f"Each request: one Shapes test graph, one image, {describe_sampler(data)}; "
        f"closed-loop clients, {data['duration_s']:g} s per row after a warm-up; "
        f"server queue {data['queue']}, "
        f"timeout {data['server_timeout_s']:g} s; a rejected client waits {data['backoff_s']:g} s.",
        *([data["note"]] if data.get("note") else []),
        "",
        "| clients | dynamic batching | images/s | share of offline | p50 latency | p99 latency "
        "| mean batch | requests | rejected (503) | failed | clients' CPU "
        "| server CPU: event loop / other threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def s(v):
        return "n/a" if v is None else f"{v:.2f} s"

    for r in data["results"]:
        batching = f"on (max {r['max_batch']})" if r["dynamic_batching"] else "off"
        lines.append(
            f"| {r['clients']} | {batching} | {r['images_per_s']:.2f} | {share(r)} "
            f"| {s(r['p50_s'])} | {s(r['p99_s'])} | {r['mean_batch']} | {r['requests']} "
            f"| {r['rejected']} | {r['failed']} | {s(r.get('client_cpu_s'))} "
            f"| {server_split(r.get('server_cpu'))} |"
        )
    lost = sum(r["failed"] + r["lost"] for r in data["results"])
    lines += [
        "",
        "Images/s counts answered requests over the whole row, the answers still due at its "
        "end included; latencies are those of answered requests, waiting in the queue "
        "included. With more clients than the server holds (the batch running plus "
        f"{data['queue']} waiting) the rest are refused at once with 503 and come back. "
        "Clients' CPU: the CPU time the load generator itself (httpx, JSON, base64) spent "
        "during the row. Server CPU: the server process's CPU time during the row, on its "
        "main thread (the event loop: HTTP, validation, JSON, base64) and on its other "
        "threads (the generation worker running the pipeline), from /proc.",
        "",
        *offline_lines(data),
        "",
        "Every request ended in an image or a 503 with Retry-After."
        if lost == 0
        else f"**{lost} request(s) failed or were lost** (see the JSON).",
        "",
        f"Command: `{shown_command(data['command'])}`",
        f"Results: `benchmarks/results/serve_load.json` ({data['date']}).",
        "",
    ]
    return "\n".join(lines)


def write_section(docs: Path, section: str) -> None:
    """Replace (or append) only the serving section of docs/benchmarks.md, between its markers
    (as the Shapes benchmark does with its own)."""
    text = docs.read_text() if docs.is_file() else "# Benchmarks\n\n"
    block = f"{START}\n{section.rstrip()}\n{END}\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]  # kept as it is, its blank line included
        text = before + block.rstrip("\n") + (after or "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="pipeline folder, 'shapes-arch' or 'tiny'")
    p.add_argument("--clients", default="4,32", help="comma list of client counts")
    p.add_argument("--batch", default="8,1", help="comma list of max_batch values (1: off)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per row")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of one client first")
    p.add_argument(
        "--offline-duration", type=float, default=10.0,
        help="seconds of each offline measurement (one before the first row, one after each)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="sent only if given")
    p.add_argument("--guidance", type=float, default=None, help="sent only if given")
    p.add_argument("--queue", type=int, default=16, help="server --max-queue")
    p.add_argument("--server-timeout", type=float, default=60.0, help="server --timeout")
    p.add_argument("--backoff", type=float, default=0.5, help="client pause after a 503")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_load.json")
    p.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks.md")
    p.add_argument("--note", default="", help="a sentence for the report (machine load, ...)")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    p.add_argument("--docs-only", action="store_true", help="rewrite the section from --out")
    p.add_argument(
        "--server-cores",
        default=None,
        help="cores for the server and the offline measurement, e.g. 1 (default: this "
        "script's); the clients keep the others",
    )
    p.add_argument("--offline-worker", type=Path, help=argparse.SUPPRESS)  # the subprocess
    args = p.parse_args(argv)
    if args.offline_worker:
        return offline_worker(args.offline_worker)
    if args.server_cores is not None:
        global SERVER_CORES
        SERVER_CORES = parse_cores(args.server_cores, "--server-cores")
        rest = os.sched_getaffinity(0) - SERVER_CORES
        if rest:  # clients off the server's cores, as they would be on other machines
            os.sched_setaffinity(0, rest)
    if args.docs_only:
        write_section(args.docs, markdown(json.loads(args.out.read_text())))
        return 0

    from sg2image.data.shapes import make_split

    graphs = [g.to_json() for g in make_split("test", n=64)]
    for g in graphs:
        g.pop("boxes", None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model in (None, "shipped"):
            if not SHIPPED.is_dir():
                raise SystemExit("no shipped model yet: pass --model shapes-arch (or a folder)")
            model, described = SHIPPED, "the shipped Shapes model (src/sg2image/assets)"
        elif args.model in ("tiny", "shapes-arch"):
            model = build_model(args.model, tmp / "model")
            described = {
                "tiny": "the tests' tiny random pipeline (32 x 32 px; overhead-dominated)",
                "shapes-arch": "random weights in the shipped Shapes architecture "
                "(64 x 64 px, same compute per image as the shipped model)",
            }[args.model]
        else:
            model, described = Path(args.model), f"`{Path(args.model).name}`"
        batches = [int(b) for b in args.batch.split(",")]
        # first: a failure here costs no rows
        offline = [offline_throughput(model, args, graphs, max(batches), tmp)]
        print(json.dumps({"offline": offline[0]}), flush=True)
        results = []
        for clients in (int(c) for c in args.clients.split(",")):
            for max_batch in batches:
                row = asyncio.run(run_config(model, args, graphs, clients, max_batch, tmp))
                after = offline_throughput(model, args, graphs, max(batches), tmp, len(offline))
                around = (offline[-1]["images_per_s"] + after["images_per_s"]) / 2
                offline.append(after)
                row["offline_images_per_s"] = round(around, 3)
                row["share_of_offline"] = round(row["images_per_s"] / around, 3)
                print(json.dumps({**row, "offline_after": after["images_per_s"]}), flush=True)
                results.append(row)
        runs, first = [o["images_per_s"] for o in offline], offline[0]
    samplers = distinct(s for r in results for s in r["samplers"])
    data = {
        "model": described,
        "machine": machine(),
        "steps": args.steps,  # as sent (None: not sent)
        "guidance": args.guidance,
        # as the answers report it (None: they differ); no answers: the offline run's
        "sampler": (samplers[0] if len(samplers) == 1 else None) if samplers else first["sampler"],
        "offline_images_per_s": round(sum(runs) / len(runs), 3),  # the mean of the runs
        "offline_batch": first["batch"],
        # the first measurement's details, and every measurement's images/s in order
        "offline": {**first, "runs": runs, "seconds_each": args.offline_duration},
        "duration_s": args.duration,
        "queue": args.queue,
        "server_timeout_s": args.server_timeout,
        "backoff_s": args.backoff,
        "command": command_line(argv or sys.argv[1:]),
        "note": args.note,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1))
    if not args.no_docs:
        write_section(args.docs, markdown(data))
    bad = sum(r["failed"] + r["lost"] for r in results)
    print(f"wrote {args.out}" + ("" if args.no_docs else f" and {args.docs}"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
