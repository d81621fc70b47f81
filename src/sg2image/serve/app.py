"""The HTTP API and the editor page: ``create_app(pipeline, settings)``.

No route takes a file path: graphs come in the body, images go out in the answer, and the only
files served are the editor's own (``static/``, from the package).
"""

# No `from __future__ import annotations`: FastAPI reads the request models, which are made
# per app, from the route signatures at definition time.

import base64
import json
import math
import secrets
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import WithJsonSchema
from starlette.concurrency import run_in_threadpool

from sg2image import __version__
from sg2image.graph import DEPTH_PREDICATES, GraphValidationError, parse_graphs
from sg2image.pipeline import SceneGraphPipeline
from sg2image.serve.batching import Batcher, BatchKey, CallerGone, QueueFull
from sg2image.serve.examples import examples_for
from sg2image.serve.generation import SEED_SPACE, PipelineRunner, png_bytes, seeds_for
from sg2image.serve.guard import BodyGuard, HostGuard
from sg2image.serve.lane import Lane
from sg2image.serve.problems import (
    MAX_PROBLEMS,
    ProblemError,
    graph_problems,
    on_problems,
    on_request_validation,
    tidy,
    tidy_lines,
)
from sg2image.serve.schemas import (
    MAX_GUIDANCE,
    ExamplesResponse,
    GenerateResponse,
    HealthResponse,
    Limits,
    MessageResponse,
    ProblemResponse,
    ValidateResponse,
    VocabularyResponse,
    request_models,
)
from sg2image.serve.settings import ServeSettings

STATIC = Path(__file__).parent / "static"
JSON_ROUTES = {"/api/generate", "/api/validate", "/api/draw"}

DESCRIPTION = """Images from scene graphs. Graphs are sg2im JSON:
`{"objects": ["red circle", "blue square"], "relationships": [[0, "left of", 1]]}`.
Problems with a graph come back as 422 with their place (`loc`) in the body."""


def _errors(*codes: int) -> dict:
    model = {400: MessageResponse, 406: MessageResponse, 413: MessageResponse}
    model |= {415: MessageResponse}
    model |= {422: ProblemResponse, 503: MessageResponse}
    return {code: {"model": model[code]} for code in codes}


def _wants_png(accept: str) -> bool:
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "image/png" in types and "application/json" not in types


async def _until_gone(receive) -> None:
    """Returns once the client has closed the connection. The route has read the body, so the
    server's next message is http.disconnect, sent when the client goes (or once the answer
    is out, by which time nobody waits on this)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(
    pipeline: SceneGraphPipeline,
    settings: ServeSettings | None = None,
    model_name: str = "model",
) -> FastAPI:
    """An app serving this pipeline. ``model_name`` is only shown (never a path to open)."""
    settings = settings or ServeSettings()
    runner = PipelineRunner(pipeline)
    vocab = pipeline.vocab
    model_max = pipeline.config.max_objects
    max_objects = min(settings.max_objects, model_max if model_max else math.inf)
    max_side = settings.largest_side(runner.image_size, pipeline.vae_scale_factor)
    few_default = pipeline.default_sampler if pipeline.default_sampler != "full" else None
    finish = (runner.finish_steps, pipeline.finish_text()) if pipeline.has_finish else None
    models = request_models(vocab, settings, max_objects, runner.layout_modes,
                            runner.image_size, pipeline.vae_scale_factor, max_side,
                            runner.samplers, few_default, finish)  # fmt: skip
    batcher = Batcher(runner, settings.max_batch, settings.max_queue, settings.batch_wait_s)
    lane = Lane(settings.max_queue)  # drawing and checking: short CPU work, bounded too
    examples = examples_for(vocab, max_objects, boxes=pipeline.has_layout)
    retry = {"Retry-After": str(settings.retry_after_s)}

    def busy(detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=503, headers=retry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.open()
        lane.open()
        yield
        lane.close()
        batcher.close()

    app = FastAPI(
        title="sg2image",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads its scripts from a CDN: the schema is /openapi.json
        redoc_url=None,
    )
    app.state.batcher, app.state.settings, app.state.runner = batcher, settings, runner
    app.state.lane = lane
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(ProblemError, on_problems)
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes, json_paths=JSON_ROUTES)
    app.add_middleware(HostGuard, allow_hosts=settings.allow_hosts)  # outermost: checked first

    def check(data: Any, prefix: list, scenes_at: list | None = None, names: bool = True) -> list:
        """Graphs checked against this model (its names unless names=False), with bounded
        work: a 256 kB document of 20,000 misspelt names once took 3 s of CPU and answered
        5 MB. Called off the event loop: a document of many bad names is CPU work."""
        try:
            return parse_graphs(
                data,
                vocab if names else None,
                max_objects,
                settings.max_relationships,
                max_problems=MAX_PROBLEMS,
            )
        except GraphValidationError as e:
            raise ProblemError(graph_problems(e, prefix, scenes_at), e.problems) from None

    def need_boxes(graphs: list, layout: str | None) -> None:
        """layout 'given' without boxes: a 422 at each graph that lacks them (the pipeline
        would stop at the first, and inside the batch, as a failure)."""
        if layout != "given":
            return
        other = " or layout 'predicted'" if "predicted" in runner.layout_modes else ""
        msg = (
            "layout 'given' needs a box for every object ([x0, y0, x1, y1] in [0, 1]); "
            f"send boxes{other}"
        )
        missing = [
            {"loc": ["body", "graphs", i, "boxes"], "msg": msg, "type": "graph"}
            for i, g in enumerate(graphs)
            if g.boxes is None
        ]
        if missing:
            raise ProblemError(missing)

    def sampler_of(body) -> tuple[str | None, int, float]:
        """(sampler, steps, guidance) of a request, as the pipeline resolves them: "fast"
        (the student; guidance: the one built in), "finish" (its own steps) or a scheduler
        name (None: the model's own) with the full sampler's defaults; a 422 at guidance when
        "fast" is sent one, at steps when "finish" is sent other than its own."""
        named = body.sampler
        unset = body.steps is None and body.guidance is None
        sampler = pipeline.default_sampler if named is None and unset else named
        if sampler not in ("fast", "finish"):
            steps = settings.default_steps if body.steps is None else body.steps
            guidance = settings.default_guidance if body.guidance is None else body.guidance
            return named, steps, float(guidance)
        if sampler == "finish":
            own = runner.finish_steps
            if body.steps not in (None, own):
                msg = f"the finish sampler takes {own} steps, not {body.steps}; omit steps"
                raise ProblemError([{"loc": ["body", "steps"], "msg": msg, "type": "finish"}])
            guidance = settings.default_guidance if body.guidance is None else body.guidance
            return "finish", own, float(guidance)
        if body.guidance is not None:
            msg = (f"the fast sampler has guidance {pipeline.config.fast_guidance:g} built in "
                   "and takes none; omit it, or choose a scheduler for the full sampler")
            raise ProblemError([{"loc": ["body", "guidance"], "msg": msg, "type": "fast"}])
        steps = pipeline.config.fast_steps if body.steps is None else body.steps
        return "fast", steps, float(pipeline.config.fast_guidance)

    GenerateRequest = models.generate
    DrawRequest = models.draw

    @app.post(
        "/api/generate",
        response_model=GenerateResponse,
        responses={
            200: {
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                "description": "JSON with base64 PNGs and their boxes; or, with `Accept: "
                "image/png` and one image, the PNG itself (its seed in the X-Seed header, a "
                "layout model's boxes in X-Boxes, JSON).",
            },
            **_errors(400, 406, 413, 415, 422, 503),
        },
        summary="Generate images from scene graphs",
    )
    async def generate(body: GenerateRequest, request: Request):
        # off the event loop (bad names cost a fuzzy search each), but not on the lane: a
        # generate request is not refused because drawings are queued (its graphs are few)
        graphs = await run_in_threadpool(check, body.graphs, ["body", "graphs"])
        layout = runner.layout_for(body.layout)
        need_boxes(graphs, layout)
        total = len(graphs) * body.num_images
        if total > settings.max_images:
            raise ProblemError(
                [
                    {
                        "loc": ["body", "num_images"],
                        "msg": f"{len(graphs)} graph(s) x {body.num_images} image(s) = {total} "
                        f"images; this server makes at most {settings.max_images} per request",
                        "type": "too_many_images",
                    }
                ]
            )
        png_only = _wants_png(request.headers.get("accept", ""))
        if png_only and total != 1:
            return JSONResponse(
                {
                    "detail": f"image/png holds one image and this request makes {total}: "
                    "accept application/json"
                },
                status_code=406,
            )
        seed = secrets.randbelow(SEED_SPACE) if body.seed is None else body.seed
        seeds = seeds_for(seed, total)
        per_image = [g for g in graphs for _ in range(body.num_images)]
        height, width = body.height or runner.image_size, body.width or runner.image_size
        sampler, steps, guidance = sampler_of(body)
        key = BatchKey(steps, guidance, sampler, layout, height, width)
        # a client that closes the connection stops being waited for: its queued work is
        # dropped, so a crowd of abandoned requests does not keep the queue full
        gone = partial(_until_gone, request.receive)
        try:
            result = await batcher.run(key, per_image, seeds, settings.timeout_s, gone)
        except QueueFull as e:
            return busy(f"busy: {e}; try again later")
        except TimeoutError:
            return busy(f"not done within {settings.timeout_s:g} s (server busy); try again later")
        except CallerGone:  # nobody reads this; 499 is the access log's "client went away"
            return Response(status_code=499)
        if png_only:
            first = result.images[0]
            headers = {"X-Seed": str(seeds[0])}
            if first.boxes is not None:
                headers["X-Boxes"] = json.dumps(first.boxes, separators=(",", ":"))
            return Response(first.png, media_type="image/png", headers=headers)
        return {
            "images": [
                {
                    "graph": j // body.num_images,
                    "seed": s,
                    "png": base64.b64encode(im.png).decode(),
                    "boxes": im.boxes,
                }
                for j, (s, im) in enumerate(zip(seeds, result.images, strict=True))
            ],
            "steps": steps,
            "guidance": guidance,
            "sampler": sampler or runner.full_sampler,
            "layout": layout,
            "width": width,
            "height": height,
            "batch_size": result.batch_size,
            "seconds": round(result.seconds, 4),
        }

    def report(document: Any) -> dict:
        try:
            found = check(document, ["body"])
        except ProblemError as e:  # what `sg2image validate` prints, and the same located
            lines = [f"{'.'.join(map(str, p['loc'][1:]))}: {p['msg']}" for p in e.problems]
            lines = e.lines or lines
            errors = tidy(e.problems)
            return {"ok": False, "num_graphs": 0, "problems": tidy_lines(lines), "errors": errors}
        return {"ok": True, "num_graphs": len(found), "problems": [], "errors": []}

    @app.post(
        "/api/validate",
        response_model=ValidateResponse,
        responses=_errors(400, 413, 415, 422, 503),
        summary="Check a graph document (one scene or a list) against this model",
    )
    async def validate(
        document: Annotated[Any, Body(), WithJsonSchema(models.validate_schema)],
    ):
        try:
            return await lane.run(report, document)
        except QueueFull as e:
            return busy(f"busy: {e}; try again later")

    def picture(scene: Any, size: int) -> bytes:
        from sg2image.drawing import draw_graph

        if not isinstance(scene, dict):
            msg = "expected one scene (an object)"
            raise ProblemError([{"loc": ["body", "graph"], "msg": msg, "type": "graph"}])
        (graph,) = check(scene, ["body", "graph"], names=False)
        labels = [(["objects", i], o) for i, o in enumerate(graph.objects)]
        labels += [(["relationships", k, 1], r[1]) for k, r in enumerate(graph.relationships)]
        n = settings.max_label_chars
        long = [
            {"loc": ["body", "graph", *at], "msg": f"longer than {n} characters", "type": "graph"}
            for at, text in labels
            if len(text) > n
        ]
        if long:
            raise ProblemError(long)
        return png_bytes(draw_graph(graph, size=size))

    @app.post(
        "/api/draw",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
            **_errors(400, 413, 415, 422, 503),
        },
        summary="A picture of one scene graph (PNG)",
    )
    async def draw(body: DrawRequest):
        try:
            png = await lane.run(picture, body.graph, body.size)
        except QueueFull as e:
            return busy(f"busy: {e}; try again later")
        return Response(png, media_type="image/png")

    @app.get("/api/vocabulary", response_model=VocabularyResponse, summary="What the model knows")
    def vocabulary():
        return {
            "objects": vocab.object_names[1:],
            "predicates": vocab.predicate_names[1:],
            "samplers": list(runner.samplers),
            "default_sampler": runner.default_sampler,
            "image_size": runner.image_size,
            "has_layout": pipeline.has_layout,
            "layout_modes": list(runner.layout_modes),
            "depth_predicates": [p for p in DEPTH_PREDICATES if vocab.has_predicate(p)],
            "limits": Limits(
                max_objects=max_objects,
                max_relationships=settings.max_relationships,
                max_steps=settings.max_steps,
                max_images=settings.max_images,
                max_batch=settings.max_batch,
                max_body_bytes=settings.max_body_bytes,
                max_guidance=MAX_GUIDANCE,
                default_steps=settings.default_steps,
                default_guidance=settings.default_guidance,
                fast_steps=pipeline.config.fast_steps if pipeline.has_student else None,
                fast_guidance=pipeline.config.fast_guidance if pipeline.has_student else None,
                finish_steps=runner.finish_steps,
                max_label_chars=settings.max_label_chars,
                max_draw_size=settings.max_draw_size,
                max_image_side=max_side,
                image_size_step=pipeline.vae_scale_factor,
            ),
        }

    @app.get("/api/examples", response_model=ExamplesResponse, summary="Example graphs")
    def get_examples():
        return {"examples": examples}

    @app.get("/api/health", response_model=HealthResponse, summary="Liveness and queue")
    def health():
        return {
            "status": "ok",
            "model": model_name,
            "has_layout": pipeline.has_layout,
            "waiting": batcher.waiting,
            "running": batcher.running,
            "stats": {
                **batcher.stats,
                "other_requests": lane.stats["requests"],  # /draw and /validate
                "other_rejected": lane.stats["rejected"],
            },
        }

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # HEAD as GET without the body (monitors and link checkers send it); kept out of the
    # schema so that the documented API stays the GET one.
    @app.head("/", include_in_schema=False)
    @app.head("/api/health", include_in_schema=False)
    def head():
        return Response(status_code=200)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
