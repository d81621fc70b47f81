"""ASGI middlewares that refuse what the routes should never see. :class:`HostGuard`: a Host
header that names another site (400; DNS rebinding). :class:`BodyGuard`: bodies over the size
limit (413, by Content-Length or while streaming), non-JSON bodies on JSON routes (415), bodies
that are not UTF-8 (400), and JSON that Python's parser takes badly (nested too deep, numbers
thousands of digits long): 422 at its place, where FastAPI would answer a bare 400."""

from __future__ import annotations

import json
import re
from itertools import accumulate

from sg2image.serve.problems import shorten

JSON_TYPES = ("application/json",)
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
MAX_DEPTH = 32  # JSON nesting; a generate request needs 5 ({graphs: [{relationships: [[...]]}]})
MAX_DIGITS = 100  # digits of a JSON integer; the largest this API takes (a seed) has 10


async def _answer(send, status: int, detail: str | list, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def host_name(value: str) -> str:
    """A Host header or an address as a name to compare: lower case, no port, no final dot;
    IPv6 in brackets ("[::1]:8000" and "::1" -> "[::1]")."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] or value
    if value.count(":") > 1:  # a bare IPv6 address (a bind address, never a Host header)
        return f"[{value}]"
    return value.split(":")[0].rstrip(".")


class HostGuard:
    """Answers only requests whose Host names this server: a web page on another site can
    point its own name at 127.0.0.1 (DNS rebinding), but its requests still carry that name."""

    def __init__(self, app, allow_hosts: tuple[str, ...] = ()):
        self.app = app
        self.any = "*" in allow_hosts
        self.allowed = list(dict.fromkeys(host_name(h) for h in (*LOCAL_HOSTS, *allow_hosts)))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.any:
            return await self.app(scope, receive, send)
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if host is not None and host_name(host) in self.allowed:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        names = ", ".join(self.allowed)
        if host is None:
            return await _answer(send, 400, f"no Host header: name one of {names}")
        shown = shorten(host_name(host))
        await _answer(
            send,
            400,
            f"Host {shown!r} is not served here (this server answers to {names}); to serve it, "
            f"start the server with --allow-host {shown}",
        )


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = {c: None for c in range(128) if chr(c) not in "[]{}"}
_LONG_NUMBER = re.compile(rf"\d{{{MAX_DIGITS + 1},}}")


def _depth(text: str) -> int:
    """How deep the JSON text nests (brackets outside strings)."""
    bare = _STRING.sub("", text).translate(_NOT_BRACKETS)
    return max(accumulate(1 if c in "[{" else -1 for c in bare), default=0)


class _LongNumber:
    def __init__(self, digits: str):
        self.digits = len(digits)


def _find(doc, marker_type) -> list | None:
    """Where in doc (a parsed JSON value) the first value of marker_type is."""
    stack: list[tuple[list, object]] = [([], doc)]
    while stack:
        at, value = stack.pop()
        if isinstance(value, marker_type):
            return at
        if isinstance(value, dict):
            stack += [([*at, k], v) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            stack += [([*at, i], v) for i, v in reversed(list(enumerate(value)))]
    return None


def json_problem(text: str) -> dict | None:
    """A located problem for JSON that parses badly in Python, or None (FastAPI parses the rest
    and locates its syntax errors itself). Cheap on ordinary bodies: two regular expressions
    before any walk."""
    if (depth := _depth(text)) > MAX_DEPTH:
        msg = f"JSON nested {depth} levels deep; at most {MAX_DEPTH} levels are accepted"
        return {"loc": ["body"], "msg": msg, "type": "json_invalid"}
    if not _LONG_NUMBER.search(_STRING.sub('""', text)):
        return None
    try:
        doc = json.loads(text, parse_int=lambda s: _LongNumber(s) if len(s) > MAX_DIGITS else 0)
    except ValueError:
        return None  # a syntax error: FastAPI's own 422 says where
    at = _find(doc, _LongNumber)
    if at is None:  # a long float: Python reads it (as inf if it must); the schema judges it
        return None
    msg = f"an integer more than {MAX_DIGITS} digits long: no number here needs that many"
    return {
        "loc": ["body", *(shorten(x) if isinstance(x, str) else x for x in at)],
        "msg": msg,
        "type": "json_invalid",
    }


class BodyGuard:
    def __init__(self, app, max_body_bytes: int, json_paths: set[str]):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.json_paths = json_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.max_body_bytes
        too_large = f"request body larger than {limit} bytes"
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await _answer(send, 400, "invalid Content-Length header")
            if int(length) > limit:
                return await _answer(send, 413, too_large)
        if scope["method"] == "POST" and scope["path"] in self.json_paths:
            mime = headers.get("content-type", "").split(";")[0].strip().lower()
            if mime not in JSON_TYPES:
                shown = shorten(mime) or "none"
                return await _answer(
                    send, 415, f"content type {shown!r}: send the body as application/json"
                )

        # Read the whole (small) body here, so a stream over the limit is refused before any
        # route sees it; the app then gets it back as one message.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                return await _answer(send, 413, too_large)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if scope["path"] in self.json_paths:
            try:
                text = body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
            except UnicodeDecodeError as e:
                return await _answer(send, 400, f"request body is not UTF-8 ({e.reason})")
            if problem := json_problem(text):
                return await _answer(send, 422, [problem])
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
