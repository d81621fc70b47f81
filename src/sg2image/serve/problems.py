"""Errors as answers: graph problems and request validation errors as located 422 details,
everything else as one message. The same shape everywhere (FastAPI's ``{"detail": ...}``)."""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sg2image.graph import GraphValidationError

_FIELDS = "objects|relationships|boxes|attributes"
# "scenes[1].relationships[2]: ..." (parse_graphs' own locations; field names are fixed)
_LOCATED = re.compile(rf"^((?:scenes\[\d+\]|{_FIELDS})(?:\.(?:{_FIELDS})|\[\d+\])*): (.*)$", re.S)
# "scenes[1].colour: unknown field (did you mean ...?)": any text can be a key, the tail is ours
_EXTRA = re.compile(
    r"^(?:scenes\[(\d+)\]\.)?(.+): (unknown field(?: \(did you mean .*\?\))?)$", re.S
)
_SCENE = re.compile(r"^scenes\[(\d+)\](?:\.|: )(.*)$", re.S)  # "scenes[1]...: anything else"


class ProblemError(Exception):
    """Raised by a route to answer 422 with these problems."""

    def __init__(self, problems: list[dict], lines: list[str] | None = None):
        self.problems = problems
        self.lines = lines or []  # the problems as parse_graphs wrote them, if from there
        super().__init__("; ".join(p["msg"] for p in problems))


def _path(text: str) -> list[str | int]:
    return [int(i) if i else name for name, i in re.findall(r"([A-Za-z_]+)|\[(\d+)\]", text)]


def locate(problem: str, prefix: list[str | int], scenes_at: list[str | int] | None) -> dict:
    """One parse_graphs line as ``{loc, msg, type}``. ``prefix``: where the graph document is in
    the body; ``scenes_at``: where scene i of a list is (``[..., "graphs"]``), or None when the
    document is the list itself."""
    scenes_at = prefix if scenes_at is None else scenes_at
    if m := _LOCATED.match(problem):
        path = _path(m.group(1))
        if path and path[0] == "scenes":
            path = [*scenes_at, *path[1:]]
        else:
            path = [*prefix, *path]
        return {"loc": path, "msg": m.group(2), "type": "graph"}
    if m := _EXTRA.match(problem):
        at = [*scenes_at, int(m.group(1))] if m.group(1) is not None else list(prefix)
        return {"loc": [*at, m.group(2)], "msg": m.group(3), "type": "graph"}
    if m := _SCENE.match(problem):  # a location we do not split further (a stray key)
        return {"loc": [*scenes_at, int(m.group(1))], "msg": m.group(2), "type": "graph"}
    return {"loc": list(prefix), "msg": problem, "type": "graph"}


def graph_problems(
    err: GraphValidationError, prefix: list[str | int], scenes_at: list[str | int] | None = None
) -> list[dict]:
    return [locate(p, prefix, scenes_at) for p in err.problems]


def _clean(errors) -> list[dict]:
    out = []
    for e in errors:
        loc = [p if isinstance(p, int | str) else str(p) for p in e.get("loc", ())]
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid" and (ctx := e.get("ctx")):
            msg = f"{msg}: {ctx.get('error', '')}".rstrip(": ")
        out.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
    return out


async def on_request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _clean(exc.errors())}, status_code=422)


async def on_problems(request: Request, exc: ProblemError) -> JSONResponse:
    return JSONResponse({"detail": exc.problems}, status_code=422)
