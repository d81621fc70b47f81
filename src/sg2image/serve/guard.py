"""An ASGI middleware that refuses what the routes should never parse: bodies over the size
limit (413, by Content-Length or while streaming), non-JSON bodies on JSON routes (415) and
bodies that are not UTF-8 (400)."""

from __future__ import annotations

import json

JSON_TYPES = ("application/json",)


async def _answer(send, status: int, detail: str, headers: list | None = None) -> None:
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
                shown = mime or "none"
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
                body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
            except UnicodeDecodeError as e:
                return await _answer(send, 400, f"request body is not UTF-8 ({e.reason})")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
