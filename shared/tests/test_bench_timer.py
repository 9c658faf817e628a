"""The benchmarks' one clock: a Stopwatch is the difference of two readings, and the loader bench's
rate is the timed batches' images over it (warm-up epoch untimed)."""

import torch

from cifar_shared.bench import timer
from cifar_shared.bench.loader import images_per_second
from cifar_shared.testing import fake_clock


def test_stopwatch_is_the_time_between_its_two_readings(monkeypatch):
    left = fake_clock(monkeypatch, [5.0, 7.5])
    with timer.Stopwatch("cpu") as watch:
        assert watch.seconds is None
    assert watch.seconds == 2.5 and left == []


def test_loader_rate_leaves_the_warm_up_epoch_out_of_images_and_time(monkeypatch):
    batches = [(torch.zeros(4, 3, 2, 2), torch.zeros(4)), (torch.zeros(3, 3, 2, 2), torch.zeros(3))]
    left = fake_clock(monkeypatch, [10.0, 12.0])  # read after the warm-up epoch and after the timed ones
    assert images_per_second(batches, epochs=2) == 2 * 7 / 2.0
    assert left == []


def test_real_clock_moves_forward():
    first = timer.now()
    assert timer.now() >= first
