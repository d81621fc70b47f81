"""The dynamic batcher on its own, with a fake runner (no model): what joins, what waits."""

import asyncio
import threading
import time

import pytest

from sg2image.serve.batching import Batcher, BatchKey, CallerGone, QueueFull, Stopped
from sg2image.serve.lane import Lane

A, B = BatchKey(2, 2.0, None), BatchKey(3, 2.0, "ddim")


class FakeRunner:
    """Returns each seed as bytes; records the batches; can hold the first one."""

    def __init__(self, hold=False, fail_on=None):
        self.batches, self.release = [], threading.Event()
        self.running = threading.Event()  # set once the worker thread has called it
        self.fail_on = fail_on
        if not hold:
            self.release.set()

    def __call__(self, key, graphs, seeds, wanted):
        self.batches.append((key, list(seeds)))
        self.running.set()
        self.wanted = wanted
        assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in seeds:
            raise RuntimeError("boom")
        if not wanted():  # as PipelineRunner does at its next sampler step
            raise Stopped("gone")
        return [str(s).encode() for s in seeds]


def run(batcher, jobs, then=None, first_running=None):
    """Submit (key, seeds) jobs in order, let `then` act once the first holds the worker.
    ``first_running`` (the runner's event): the other jobs are submitted only once the worker
    runs the first, so that they wait however slowly a loaded machine starts its thread."""

    async def main():
        tasks = []
        for i, (key, seeds) in enumerate(jobs):
            tasks.append(asyncio.create_task(batcher.run(key, ["g"] * len(seeds), seeds, 10)))
            await asyncio.sleep(0.01)
            if i == 0 and first_running is not None:
                assert await asyncio.to_thread(first_running.wait, 10)
        if then is not None:
            then()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        batcher.close()


def test_waiting_jobs_of_one_key_join_up_to_max_batch():
    runner = FakeRunner(hold=True)
    batcher = Batcher(runner, max_batch=4, max_queue=10)
    jobs = [(A, [0]), (A, [1, 2, 3]), (B, [4]), (A, [5, 6]), (A, [7]), (A, [8, 9, 10, 11, 12])]
    results = run(batcher, jobs, then=runner.release.set, first_running=runner.running)
    # first alone (it arrived to an idle worker); then the oldest waiting job and the others of
    # its key that fit: [1,2,3] + [7] (since [5,6] does not fit); then B; then [5,6]; then the
    # job larger than max_batch, alone, in two passes
    assert [seeds for _, seeds in runner.batches] == [
        [0],
        [1, 2, 3, 7],
        [4],
        [5, 6],
        [8, 9, 10, 11],
        [12],
    ]
    assert [r.images for r in results] == [[str(s).encode() for s in seeds] for _, seeds in jobs]
    assert [r.batch_size for r in results] == [1, 4, 1, 2, 4, 4]
    assert batcher.stats["largest_batch"] == 4 and batcher.stats["images"] == 13


def test_max_batch_1_runs_one_request_at_a_time():
    runner = FakeRunner(hold=True)
    batcher = Batcher(runner, max_batch=1, max_queue=10)
    run(
        batcher,
        [(A, [0]), (A, [1]), (A, [2])],
        then=runner.release.set,
        first_running=runner.running,
    )
    assert [seeds for _, seeds in runner.batches] == [[0], [1], [2]]


def test_queue_bound_and_close():
    runner = FakeRunner(hold=True)
    batcher = Batcher(runner, max_batch=1, max_queue=2)

    async def main():
        running = asyncio.create_task(batcher.run(A, ["g"], [0], 10))
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(batcher.run(A, ["g"], [k], 10)) for k in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull, match="2 requests are waiting"):
            await batcher.run(A, ["g"], [3], 10)
        threading.Timer(0.1, runner.release.set).start()
        batcher.close(timeout_s=5)  # the running batch finishes; the waiting are refused
        return await asyncio.gather(running, *waiting, return_exceptions=True)

    done, *refused = asyncio.run(main())
    assert done.images == [b"0"]
    assert all(isinstance(r, QueueFull) and "shutting down" in str(r) for r in refused)
    assert batcher.stats["rejected"] == 1
    with pytest.raises(QueueFull):
        asyncio.run(batcher.run(A, ["g"], [9], 1))


def test_a_failed_batch_fails_its_requests_only():
    runner = FakeRunner(fail_on=1)
    batcher = Batcher(runner, max_batch=1, max_queue=10)
    results = run(batcher, [(A, [0]), (A, [1]), (A, [2])])
    assert results[0].images == [b"0"] and results[2].images == [b"2"]
    assert isinstance(results[1], RuntimeError) and batcher.stats["failed"] == 1


def test_batch_wait_gathers_requests_that_arrive_soon_after():
    for wait, expected in [(0.0, [[0], [1]]), (0.5, [[0, 1]])]:
        runner = FakeRunner()
        batcher = Batcher(runner, max_batch=4, max_queue=10, batch_wait_s=wait)
        start = time.perf_counter()
        # no wait: [1] comes once [0] runs (however late a loaded machine starts the worker)
        run(batcher, [(A, [0]), (A, [1])], first_running=runner.running if wait == 0 else None)
        assert [seeds for _, seeds in runner.batches] == expected
        assert time.perf_counter() - start < 3


def test_timed_out_waiting_job_is_dropped():
    runner = FakeRunner(hold=True)
    batcher = Batcher(runner, max_batch=1, max_queue=10)

    async def main():
        first = asyncio.create_task(batcher.run(A, ["g"], [0], 10))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await batcher.run(A, ["g"], [1], 0.1)
        assert batcher.waiting == 0
        runner.release.set()
        return await first

    try:
        assert asyncio.run(main()).images == [b"0"]
    finally:
        batcher.close()
    assert [seeds for _, seeds in runner.batches] == [[0]]
    assert batcher.stats["timeouts"] == 1


def test_a_caller_that_goes_leaves_the_queue_or_is_not_waited_for():
    runner = FakeRunner(hold=True)
    batcher = Batcher(runner, max_batch=1, max_queue=10)

    async def main():
        running_left, queued_left = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(batcher.run(A, ["g"], [0], 10, running_left.wait))
        await asyncio.sleep(0.05)  # [0] runs (held)
        queued = asyncio.create_task(batcher.run(A, ["g"], [1], 10, queued_left.wait))
        stays = asyncio.create_task(batcher.run(A, ["g"], [2], 10))
        await asyncio.sleep(0.05)
        assert batcher.waiting == 2
        queued_left.set()
        with pytest.raises(CallerGone):
            await queued
        assert batcher.waiting == 1  # its place is free at once
        assert runner.wanted()
        running_left.set()
        with pytest.raises(CallerGone):
            await running  # not waited for; its batch is told so, and stops
        assert batcher.running == 1 and not runner.wanted()
        runner.release.set()
        return await stays

    try:
        assert asyncio.run(main()).images == [b"2"]
    finally:
        batcher.close()
    assert [seeds for _, seeds in runner.batches] == [[0], [2]]  # [1] was never made
    assert batcher.stats["abandoned"] == 2 and batcher.stats["failed"] == 0
    assert batcher.stats["stopped"] == 1 and batcher.stats["images"] == 1


def test_lane_runs_one_at_a_time_and_refuses_past_its_queue():
    lane, release, started = Lane(max_queue=2), threading.Event(), threading.Event()
    order = []

    def work(k):
        started.set()
        assert release.wait(10)
        order.append(k)
        return k

    async def main():
        lane.open()
        tasks = [asyncio.create_task(lane.run(work, k)) for k in range(3)]
        await asyncio.sleep(0.05)
        assert started.is_set() and lane.waiting == 2
        with pytest.raises(QueueFull, match="2 requests are waiting"):
            await lane.run(work, 9)
        release.set()
        return await asyncio.gather(*tasks)

    try:
        assert asyncio.run(main()) == [0, 1, 2] == order
    finally:
        lane.close()
    assert lane.stats == {"requests": 3, "rejected": 1}
