"""Load benchmark of `sg2image serve`: N concurrent clients on loopback for a bounded time.

Each configuration starts a real server (`sg2image serve`, a subprocess), warms it up, then runs
N closed-loop clients for D seconds: each sends one generate request (one Shapes test graph,
one image), waits for the answer, and sends the next; after a 503 it waits `--backoff`
seconds. Reported per configuration: images per second, p50 / p99 latency of the answered
requests (waiting included), rejected (503 + Retry-After) and failed requests, and the batch
sizes the server actually ran. Every request must end in a PNG or a clear rejection: any
other outcome counts as failed, and the script exits non-zero if one happens.

Runs with and without dynamic batching (--max-batch 8 and 1) at each client count.

    python benchmarks/serve_load.py                        # the shipped model, if present
    python benchmarks/serve_load.py --model shapes-arch    # random weights, shipped architecture
    python benchmarks/serve_load.py --model tiny --duration 5 --clients 4   # a quick look

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


def start_server(model: Path, port: int, args, max_batch: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sg2image.cli", "serve", "--model", str(model)]
    cmd += ["--port", str(port), "--max-batch", str(max_batch), "--max-queue", str(args.queue)]
    cmd += ["--timeout", str(args.server_timeout), "--max-steps", str(max(args.steps, 1))]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


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


async def client(k: int, url: str, graphs: list, args, deadline: float, log: list) -> None:
    timeout = httpx.Timeout(args.server_timeout + 30)
    async with httpx.AsyncClient(timeout=timeout) as c:
        n = 0
        while time.perf_counter() < deadline:
            body = {
                "graphs": [graphs[(k * 7919 + n) % len(graphs)]],
                "steps": args.steps,
                "guidance": args.guidance,
                "seed": k * 100_000 + n,
            }
            n += 1
            start = time.perf_counter()
            entry = {"client": k, "start": start}
            try:
                r = await c.post(f"{url}/api/generate", json=body)
                entry["status"] = r.status_code
                if r.status_code == 200 and is_png_answer(r):
                    entry["outcome"] = "image"
                    entry["batch_size"] = r.json()["batch_size"]
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
        log: list[dict] = []
        start = time.perf_counter()
        deadline = start + args.duration
        await asyncio.gather(*(client(k, url, graphs, args, deadline, log) for k in range(clients)))
        elapsed = time.perf_counter() - start  # includes the answers still due at the deadline
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
        "failures": sorted({e.get("detail", "") for e in failed})[:5],
    }


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
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "cores_used": len(os.sched_getaffinity(0)),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }


def command_line(argv: list[str]) -> str:
    """This run's command, with the thread and core settings it ran under."""
    prefix = ""
    if os.environ.get("OMP_NUM_THREADS"):
        prefix += f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
    cores = sorted(os.sched_getaffinity(0))
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


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [
        HEADING,
        "",
        f"Load test of the HTTP API (`benchmarks/serve_load.py`), model: {data['model']}.",
        f"Machine: {m['cpu']}, {m['cores_used']} of {m['cores_visible']} cores "
        f"(OMP_NUM_THREADS={m['omp_num_threads']}); server and clients share them, on loopback.",
        f"Each request: one Shapes test graph, one image, {data['steps']} steps "
        f"(DPM-Solver++), guidance {data['guidance']}; closed-loop clients, "
        f"{data['duration_s']:g} s per row after a warm-up; server queue {data['queue']}, "
        f"timeout {data['server_timeout_s']:g} s; a rejected client waits {data['backoff_s']:g} s.",
        *([data["note"]] if data.get("note") else []),
        "",
        "| clients | dynamic batching | images/s | p50 latency | p99 latency | mean batch "
        "| requests | rejected (503) | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def s(v):
        return "n/a" if v is None else f"{v:.2f} s"

    for r in data["results"]:
        batching = f"on (max {r['max_batch']})" if r["dynamic_batching"] else "off"
        lines.append(
            f"| {r['clients']} | {batching} | {r['images_per_s']:.2f} | {s(r['p50_s'])} "
            f"| {s(r['p99_s'])} | {r['mean_batch']} | {r['requests']} | {r['rejected']} "
            f"| {r['failed']} |"
        )
    lost = sum(r["failed"] + r["lost"] for r in data["results"])
    lines += [
        "",
        "Images/s counts answered requests over the whole row, the answers still due at its "
        "end included; latencies are those of answered requests, waiting in the queue "
        "included. With more clients than the server holds (the batch running plus "
        f"{data['queue']} waiting) the rest are refused at once with 503 and come back.",
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
        text = before + block + rest.split(END, 1)[1].lstrip("\n")
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
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--queue", type=int, default=16, help="server --max-queue")
    p.add_argument("--server-timeout", type=float, default=60.0, help="server --timeout")
    p.add_argument("--backoff", type=float, default=0.5, help="client pause after a 503")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_load.json")
    p.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks.md")
    p.add_argument("--note", default="", help="a sentence for the report (machine load, ...)")
    p.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    p.add_argument("--docs-only", action="store_true", help="rewrite the section from --out")
    args = p.parse_args(argv)
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
        results = []
        for clients in (int(c) for c in args.clients.split(",")):
            for max_batch in (int(b) for b in args.batch.split(",")):
                row = asyncio.run(run_config(model, args, graphs, clients, max_batch, tmp))
                print(json.dumps(row), flush=True)
                results.append(row)
    data = {
        "model": described,
        "machine": machine(),
        "steps": args.steps,
        "guidance": args.guidance,
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
