"""Errors as answers: graph problems and request validation errors as located 422 details,
everything else as one message. The same shape everywhere (FastAPI's ``{"detail": ...}``).

Every answer is small whatever the request: values the client sent are echoed at most
``MAX_ECHO`` characters long (a 240 kB label once came back twice, in 480 kB), and at most
``MAX_SHOWN`` problems are listed."""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sg2image.graph import GraphValidationError

MAX_ECHO = 80  # characters of a client's value shown in a message (then an ellipsis)
MAX_MESSAGE = 320  # characters of a whole message: an 80-character value and our words
# a document's checking stops at the first scene after MAX_PROBLEMS problems
# (graph.parse_graphs' max_problems); one scene can add up to a hundred, so an answer lists
# at most MAX_SHOWN
MAX_PROBLEMS = 50
MAX_SHOWN = 100

_FIELDS = "objects|relationships|boxes|attributes"
# "scenes[1].relationships[2]: ..." (parse_graphs' own locations; field names are fixed)
_LOCATED = re.compile(rf"^((?:scenes\[\d+\]|{_FIELDS})(?:\.(?:{_FIELDS})|\[\d+\])*): (.*)$", re.S)
# "scenes[1].colour: unknown field (did you mean ...?)": any text can be a key, the tail is ours
_EXTRA = re.compile(
    r"^(?:scenes\[(\d+)\]\.)?(.+): (unknown field(?: \(did you mean .*\?\))?)$", re.S
)
_SCENE = re.compile(r"^scenes\[(\d+)\](?:\.|: )(.*)$", re.S)  # "scenes[1]...: anything else"


# a quoted value in a message, as repr() writes it ('red circle', "it's")
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten_message(msg: str) -> str:
    """Each quoted value cut to MAX_ECHO characters, then the whole to MAX_MESSAGE."""

    def cut(m: re.Match) -> str:
        quoted = m.group(0)
        if len(quoted) <= MAX_ECHO + 2:
            return quoted
        return quoted[: MAX_ECHO + 1] + "…" + quoted[-1]

    return shorten(_QUOTED.sub(cut, msg), MAX_MESSAGE)


def tidy(problems: list[dict]) -> list[dict]:
    """Problems as answered: short messages and locations (a location can hold a key the client
    chose), and at most MAX_SHOWN of them."""
    out = [
        {
            **p,
            "loc": [shorten(x) if isinstance(x, str) else x for x in p["loc"]],
            "msg": shorten_message(p["msg"]),
        }
        for p in problems[:MAX_SHOWN]
    ]
    if len(problems) > MAX_SHOWN:
        more = len(problems) - MAX_SHOWN
        out.append({"loc": ["body"], "msg": f"and {more} more problem(s)", "type": "more"})
    return out


def tidy_lines(lines: list[str]) -> list[str]:
    out = [shorten_message(line) for line in lines[:MAX_SHOWN]]
    if len(lines) > MAX_SHOWN:
        out.append(f"and {len(lines) - MAX_SHOWN} more problem(s)")
    return out


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
    return JSONResponse({"detail": tidy(_clean(exc.errors()))}, status_code=422)


async def on_problems(request: Request, exc: ProblemError) -> JSONResponse:
    return JSONResponse({"detail": tidy(exc.problems)}, status_code=422)
