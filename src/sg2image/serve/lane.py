"""A bounded lane for the short CPU work of the other routes (drawing a graph, checking a graph
document): one worker thread, and a queue as long as the generation queue; a request that finds
it full is refused at once (:class:`~sg2image.serve.batching.QueueFull`, a 503 with
Retry-After), as a generate request is.

Why its own thread rather than the generation worker: drawing takes milliseconds and the
editor draws on every edit, so it should not wait behind a batch of 100-step images. Why one
thread rather than the server's thread pool: 40 costly drawings at once on 40 threads took the
CPU (and the GIL) from the generation worker; one thread leaves it the rest of the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sg2image.serve.batching import QueueFull

T = TypeVar("T")


class Lane:
    def __init__(self, max_queue: int, name: str = "sg2image-lane"):
        self.max_queue = max_queue
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.admitted = 0  # running or waiting; touched on the event loop only
        self.stats = {"requests": 0, "rejected": 0}

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - 1)

    def open(self) -> None:
        self._closed = False

    def close(self) -> None:
        """Refuse new work; what was admitted finishes on the worker thread."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the lane's thread; QueueFull if max_queue calls are waiting already."""
        if self._closed:
            raise QueueFull("the server is shutting down")
        if self.waiting >= self.max_queue:
            self.stats["rejected"] += 1
            raise QueueFull(f"{self.waiting} requests are waiting already")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self.admitted += 1
        self.stats["requests"] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.admitted -= 1
