"""Dynamic batching: generate requests wait in a bounded queue, and one worker thread runs the
pipeline on batches of the waiting requests that share steps, guidance, sampler and layout
mode.

The event loop never runs the pipeline: a request submits a :class:`Job` and awaits its future,
which the worker thread resolves through the job's own event loop. While a batch runs, new
requests queue up and are joined into the next batch (up to ``max_batch`` images), so under load
the batches fill by themselves; ``batch_wait_s`` can also hold a lone request back a little to
wait for company. A request that waits too long is dropped from the queue (its caller gets a
timeout); one that finds the queue full is refused at once (:class:`QueueFull`); one whose
caller has gone (the client closed the connection) is dropped from the queue, or, if its batch
is running, no longer waited for (:class:`CallerGone`); a running batch whose callers have all
gone is stopped at its next sampler step (the runner asks ``wanted()``, and raises
:class:`Stopped`): nobody computes images nobody reads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BatchKey:
    """What a batch must share: requests with different keys never run together."""

    steps: int
    guidance: float
    sampler: str | None  # None: the model's own scheduler
    # "predicted" or "given" (one per pipeline call); None: a layout-free model
    layout: str | None = None
    height: int | None = None  # pixels; None: the model's training size
    width: int | None = None


@dataclass
class JobResult:
    images: list[Any]  # what the runner made, one per seed, in order
    batch_size: int  # images in the (largest) forward pass this job ran in
    seconds: float  # time from submission to result


@dataclass(eq=False)  # identity: a job is removed from the queue by being itself
class Job:
    key: BatchKey
    graphs: list[Any]  # one graph per image to generate
    seeds: list[int]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False

    @property
    def size(self) -> int:
        return len(self.seeds)


class QueueFull(Exception):
    """The queue is full (or the server is closing): try again later."""


class CallerGone(Exception):
    """The caller went away before its images were done; its work was dropped."""


class Stopped(Exception):
    """Raised by a runner that stopped early because ``wanted()`` turned False."""


# runner(key, graphs, seeds, wanted) -> one result (an image) per seed; called on the worker
# thread only. ``wanted()`` is False once every caller of the batch has gone: a runner may
# then stop and raise Stopped. The batcher does not look inside the results.
Runner = Callable[[BatchKey, Sequence[Any], Sequence[int], Callable[[], bool]], list[Any]]


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    def __init__(self, runner: Runner, max_batch: int, max_queue: int, batch_wait_s: float = 0.0):
        self.runner = runner
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.running = 0  # images in the batch now running
        self.stats = {
            "requests": 0,
            "images": 0,
            "batches": 0,
            "largest_batch": 0,
            "rejected": 0,
            "timeouts": 0,
            "abandoned": 0,  # callers that went away before their answer
            "stopped": 0,  # batches stopped early: all their callers had gone
            "failed": 0,
        }

    # ------------------------------------------------------------------ event-loop side

    @property
    def waiting(self) -> int:
        """Requests in the queue (not the batch running)."""
        return len(self._pending)

    def submit(self, key: BatchKey, graphs: Sequence[Any], seeds: Sequence[int]) -> Job:
        if len(graphs) != len(seeds) or not seeds:
            raise ValueError("one graph per seed, at least one")
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"{len(self._pending)} requests are waiting already")
            job = Job(key, list(graphs), list(seeds), loop, loop.create_future())
            self._pending.append(job)
            self.stats["requests"] += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="sg2image-generate", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return job

    async def run(
        self,
        key: BatchKey,
        graphs: Sequence[Any],
        seeds: Sequence[int],
        timeout_s: float,
        gone: Callable[[], Awaitable] | None = None,
    ) -> JobResult:
        """Queue the work and wait for it. Raises QueueFull; TimeoutError after timeout_s;
        CallerGone as soon as ``gone()`` (an awaitable that ends when the caller has gone)
        ends. In both of the last cases the work is dropped if it has not started, and its
        result ignored if it has (the rest of its batch is served as usual)."""
        job = self.submit(key, graphs, seeds)
        watch = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            # asyncio.wait never cancels what it waits on: the future stays the worker's
            await asyncio.wait(
                [job.future] + ([watch] if watch is not None else []),
                timeout=timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if job.future.done():
                return job.future.result()
            left = watch is not None and watch.done()
            with self._cond:
                self.stats["abandoned" if left else "timeouts"] += 1
            if left:
                raise CallerGone("the client closed the connection")
            raise TimeoutError(f"not done within {timeout_s:g} s")
        finally:
            if watch is not None:
                watch.cancel()
            if not job.future.done():  # timed out, the caller went away, or was cancelled
                self.cancel(job)

    def cancel(self, job: Job) -> None:
        with self._cond:
            job.cancelled = True
            try:
                self._pending.remove(job)
            except ValueError:
                pass  # already running: its result will be ignored

    def open(self) -> None:
        """Accept work again after :meth:`close` (an app's lifespan may start more than once)."""
        with self._cond:
            self._closed = False

    def close(self, timeout_s: float = 5.0) -> None:
        """Refuse new work, fail what is waiting, and let the running batch finish."""
        with self._cond:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        for job in dropped:
            self._deliver(job, None, QueueFull("the server is shutting down"))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    # ------------------------------------------------------------------ worker side

    def _images_waiting(self, key: BatchKey) -> int:
        return sum(j.size for j in self._pending if j.key == key)

    def _take(self) -> list[Job]:
        """The oldest job and, up to max_batch images, the other waiting jobs of its key."""
        first = self._pending[0]
        batch, n = [], 0
        for job in list(self._pending):
            if job.key != first.key:
                continue
            if batch and n + job.size > self.max_batch:
                if n >= self.max_batch:
                    break
                continue  # too big for the room left; a smaller one behind may fit
            batch.append(job)
            n += job.size
        for job in batch:
            self._pending.remove(job)
        return batch

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                if self.batch_wait_s > 0:
                    deadline = time.monotonic() + self.batch_wait_s
                    while (
                        self._pending
                        and self._images_waiting(self._pending[0].key) < self.max_batch
                        and (left := deadline - time.monotonic()) > 0
                        and not self._closed
                    ):
                        self._cond.wait(left)
                    if not self._pending:
                        continue  # they all timed out while we waited
                batch = self._take()
                self.running = sum(j.size for j in batch)
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self.running = 0

    def _run(self, batch: list[Job]) -> None:
        key = batch[0].key
        graphs = [g for job in batch for g in job.graphs]
        seeds = [s for job in batch for s in job.seeds]
        images: list[Any] = []
        error: BaseException | None = None
        largest = 0

        def wanted() -> bool:
            return not all(job.cancelled for job in batch)

        try:
            # one job larger than max_batch (max_images > max_batch) runs in several passes
            for start in range(0, len(seeds), self.max_batch):
                chunk = slice(start, start + self.max_batch)
                if not wanted():
                    raise Stopped("every caller of this batch has gone")
                out = self.runner(key, graphs[chunk], seeds[chunk], wanted)
                if len(out) != len(seeds[chunk]):
                    raise RuntimeError(f"runner gave {len(out)} images for {len(seeds[chunk])}")
                images += out
                largest = max(largest, len(seeds[chunk]))
                with self._cond:
                    self.stats["batches"] += 1
                    self.stats["largest_batch"] = max(self.stats["largest_batch"], largest)
        except Stopped:
            with self._cond:
                self.stats["stopped"] += 1
            return  # nobody is waiting for it
        except Exception as e:  # delivered to every caller of this batch
            error = e
        with self._cond:
            if error is None:
                self.stats["images"] += len(seeds)
            else:
                self.stats["failed"] += len(batch)
        at = 0
        for job in batch:
            part = images[at : at + job.size]
            at += job.size
            if error is not None:
                self._deliver(job, None, error)
            else:
                done = time.perf_counter() - job.submitted
                self._deliver(job, JobResult(part, largest, done), None)

    @staticmethod
    def _deliver(job: Job, result: JobResult | None, error: BaseException | None) -> None:
        if job.cancelled:
            return
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
        except RuntimeError:
            pass  # that request's event loop is gone: nobody is waiting
