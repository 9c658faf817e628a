"""What the tests of every package share: tiny on-disk datasets in the real formats, the real data
sets' paths, a tiny model, and (in submodules) the shared suites and the fault injector.

Test-only: this package, and it alone, may need pytest (``pip install 'cifar-shared[test]'``); no
production module imports it (``shared/tests/test_imports.py``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from cifar_shared.data.real_sets import REAL_DATA, real_subset_path

__all__ = ["REAL_DATA", "real_subset_or_skip", "real_subset_path", "write_cifar10", "gloo_shard_worker", "tiny_net",
           "CIFAR10_CLASSES", "fake_clock", "call_command"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 20, test: int = 10, seed: int = 0) -> Path:
    """CIFAR-10 in the official python format (py2-style pickles, N×3072 uint8 rows), tiny."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        batch = {"batch_label": name, "labels": rng.integers(0, 10, n).tolist(), "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def real_subset_or_skip(name: str = "cifar10-subset") -> Path:
    """The real data set's path, or a pytest skip that says where it was looked for."""
    import pytest

    path = real_subset_path(name)
    env, proof = REAL_DATA[name]
    if not (path / proof).exists():
        pytest.skip(f"real {name} not found at {path} (set {env}=PATH to point at it)")
    return path


def gloo_shard_worker(rank: int, world: int, port: int, out) -> None:
    """One DDP rank (gloo, CPU): the image ids its loader yields in an epoch; rank 0 puts all ranks'.

    Lives here, not in a test file, because spawned processes must import it by module name.
    """
    import torch
    import torch.distributed as dist

    from cifar_shared.data import ShardedPermutation, TensorBatchLoader
    from cifar_shared.data.sources import make_synthetic

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    data, _ = make_synthetic(4, 90, 4, 8, seed=0)
    data.images[:, 0, 0, 0] = torch.arange(90, dtype=torch.uint8)  # tag: image id in a pixel
    loader = TensorBatchLoader(data.images, data.labels, 8, [0, 0, 0], [1 / 255] * 3,
                               ShardedPermutation(90, seed=3, rank=dist.get_rank(), world_size=dist.get_world_size()))
    loader.sampler.set_epoch(2)
    ids = torch.cat([x[:, 0, 0, 0].round().long() for x, _ in loader])
    gathered = [torch.zeros_like(ids) for _ in range(world)]
    dist.all_gather(gathered, ids)
    if rank == 0:
        out.put([g.tolist() for g in gathered])
    dist.destroy_process_group()


def tiny_net(num_classes: int = 10):
    """A few-thousand-parameter CNN (conv, batch norm, dropout) for engine tests that need a model
    but no model package (the shared session installs none); batch norm and dropout give a resume
    running statistics and RNG state to get right."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * 16, num_classes),
    )


def call_command(main, argv, monkeypatch, capsys) -> tuple[int, str, str]:
    """A command's entry function (``train_main``, ``eval_main``, ...) as its script calls it, in this
    process -> (exit code, stdout, stderr); the run's log handlers, which write to this test's
    captured streams, are closed with it."""
    import sys

    from cifar_shared.engine.train import close_run_logs

    monkeypatch.setattr(sys, "argv", [getattr(main, "__name__", "main"), *map(str, argv)])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        close_run_logs()
    out, err = capsys.readouterr()
    return code, out, err


def fake_clock(monkeypatch, readings: list[float]) -> list[float]:
    """The benchmarks' one clock (``cifar_shared.bench.timer``) reads ``readings`` in order; a test
    fails on an extra reading. Returns the list, emptied as it is read: the timed code is the real one."""
    import types

    from cifar_shared.bench import timer

    left = list(readings)
    monkeypatch.setattr(timer, "time", types.SimpleNamespace(perf_counter=lambda: left.pop(0)))
    return left
