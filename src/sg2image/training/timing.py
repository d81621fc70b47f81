"""How fast a part trains, as the base's report.json and the method's timings.json record it.

A smoke run projects the full run's time from a few steps of each part. Its first steps are
mostly warm-up (kernel selection, allocator growth, loader start-up): on an H200 they made
the projection 3.7x the measured run. So each loop's ``StepTimer`` times only the steps
after the first ``WARMUP_STEPS``, and leaves out what the loop pauses for (checkpoints,
evaluations), whose frequency differs between a smoke run and a full one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

WARMUP_STEPS = 5


class StepTimer:
    """Seconds and count of a loop's steady steps. Call ``step()`` after each step and wrap
    what is not a step in ``paused()``. On a GPU it waits for the device at the warm-up's
    end, at pauses and at ``steady()`` (not at every step), so queued work is counted."""

    def __init__(
        self,
        total_steps: int,
        device: torch.device | str | None = None,
        warmup: int = WARMUP_STEPS,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.warmup = min(warmup, total_steps // 2)  # a loop of 2 steps still times one
        self.device = torch.device(device) if device is not None else None
        self.clock, self.steps, self.seconds = clock, 0, 0.0
        self._since = clock() if self.warmup == 0 else None

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self._sync()
            self._since = self.clock()

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self._since is None:  # still warming up: nothing timed yet
            yield
            return
        self._sync()
        self.seconds += self.clock() - self._since
        try:
            yield
        finally:
            self._sync()
            self._since = self.clock()

    def steady(self) -> dict:
        """{"steady_steps", "steady_seconds"} so far (0 steps while warming up)."""
        if self._since is not None:
            self._sync()
            now = self.clock()
            self.seconds, self._since = self.seconds + now - self._since, now
        return {"steady_steps": max(self.steps - self.warmup, 0), "steady_seconds": self.seconds}


def training_rate(
    steps: int, batch_size: int, seconds: float, timer: StepTimer | None = None
) -> dict:
    """A part's whole time (start-up, checkpoints and warm-up included) and, with ``timer``,
    its steady steps' time, which a smoke run's projection uses."""
    rate = {"train_steps": steps, "train_batch_size": batch_size, "train_seconds": seconds,
            "samples_per_s": steps * batch_size / max(seconds, 1e-9)}  # fmt: skip
    if timer is not None:
        rate.update(timer.steady())
    return rate


def seconds_per_step(rate: dict, prefix: str = "") -> float | None:
    """Steady seconds per step of a recorded rate (``prefix`` names a sub-loop's fields);
    the whole time per step for a record without steady steps (older runs); None if none."""
    if rate.get(prefix + "steady_steps"):
        return rate[prefix + "steady_seconds"] / rate[prefix + "steady_steps"]
    if prefix or not rate.get("train_steps"):
        return None
    return rate["train_seconds"] / rate["train_steps"]
