"""The one clock every benchmark times with: wall time at which the device's queued work is done.

A GPU runs kernels after the Python call that queued them returns, so a reading without a
``torch.cuda.synchronize`` first would time the queueing, not the work. Every benchmark reads the
time through ``now`` (or ``Stopwatch``); their tests replace this module's ``time`` with a fake
clock and check each benchmark's arithmetic on exact readings.
"""

from __future__ import annotations

import time

import torch


def sync(device: torch.device | str | None) -> None:
    """Wait for the work queued on ``device`` (CUDA); nothing to wait for on CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device | str | None = None) -> float:
    """Seconds (``perf_counter``) once ``device`` has finished what was queued on it."""
    sync(device)
    return time.perf_counter()


class Stopwatch:
    """``with Stopwatch(device) as watch: ...`` then ``watch.seconds``: the block's wall time,
    the device's work included at both ends."""

    def __init__(self, device: torch.device | str | None = None):
        self.device, self.seconds = device, None

    def __enter__(self) -> Stopwatch:
        self._start = now(self.device)
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = now(self.device) - self._start
