"""qvit-bench's CPU timing: FP and QAT steps alternate, each side's step time is the median of its
own timed steps (warm-up untimed), read through the benchmarks' one clock."""

import torch

from cifar_qvit.bench import interleaved
from cifar_shared.testing import fake_clock


def test_interleaved_steps_alternate_and_report_each_sides_median(monkeypatch):
    models = {"fp": (torch.nn.Linear(4, 3), None), "qat": (torch.nn.Linear(4, 3), None)}
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    # (start, end) per step, in the order fp, qat, fp, qat, ...: 1 warm-up round, then 3 timed rounds
    durations = [(100.0, 100.0), (1.0, 2.0), (4.0, 3.0), (2.0, 9.0)]
    readings, t = [], 0.0
    for pair in durations:
        for d in pair:
            readings += [t, t + d]
            t += 10
    left = fake_clock(monkeypatch, readings)
    result = interleaved(models, x, y, steps=3, warmup=1)
    assert left == []
    assert result == {"fp": {"step_s": 2.0}, "qat": {"step_s": 3.0}}  # medians of (1, 4, 2) and (2, 3, 9)
