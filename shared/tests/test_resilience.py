"""The parts that make runs survive kills, Ctrl-C and NaN (end to end: cifar_shared.testing.fault_suite)."""

import errno
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchmetrics import MeanMetric

from cifar_shared import UserError
from cifar_shared.data.augment import AugmentPolicy, BatchAugment
from cifar_shared.data.loader import ShardedPermutation, TensorBatchLoader
from cifar_shared.engine import resilience
from cifar_shared.engine.callbacks import RunRecorder
from cifar_shared.engine.config import check_output_dir
from cifar_shared.engine.metrics import classification_metrics
from cifar_shared.engine.resilience import (
    AtomicCheckpointIO,
    atomic_write,
    load_metric_states,
    metric_states,
)
from cifar_shared.testing.faults import comparable


def _row(epoch: int, acc: float) -> dict:
    return {"epoch": epoch, "time_s": 1.0 + epoch, "val/acc": acc}


def test_recorder_never_loses_an_epoch_to_a_restore(tmp_path):
    """Testing the best checkpoint (epoch 2 of 4) restores its older history: the rows stay."""
    rec = RunRecorder(tmp_path / "metrics.json", ["a", "b"])
    rec.history = [_row(e, 0.1 * e) for e in (1, 2, 3, 4)]
    best_state = {"history": [_row(1, 0.1), _row(2, 0.2)], "extra": {"classes": ["a", "b"]}}
    rec.load_state_dict(best_state)
    assert [r["epoch"] for r in rec.history] == [1, 2, 3, 4]
    fresh = RunRecorder(tmp_path / "metrics.json", ["a", "b"])  # a resumed process gets the rows back
    fresh.load_state_dict({"history": rec.history, "extra": {"classes": ["a", "b"], "lr_find": {"lr_used": 0.1}}})
    assert [r["epoch"] for r in fresh.history] == [1, 2, 3, 4] and fresh.extra["lr_find"] == {"lr_used": 0.1}


def test_metrics_json_comparison_ignores_only_wall_times():
    a = {"classes": ["x"], "history": [_row(1, 0.5)], "test": {"acc": 0.5}}
    b = {"classes": ["x"], "history": [{**_row(1, 0.5), "time_s": 99.0}], "test": {"acc": 0.5}}
    assert comparable(a) == comparable(b)
    assert comparable(a) != comparable({**b, "history": [{**_row(1, 0.51)}]})


def _loader(epoch: int) -> TensorBatchLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g)
    policy = AugmentPolicy.from_config({"crop_padding": 2, "flip": True, "cutout": 3, "cutout_p": 0.5})
    loader = TensorBatchLoader(images, torch.arange(50) % 5, 8, [0.5] * 3, [0.25] * 3,
                               ShardedPermutation(50, seed=7), augment=BatchAugment(policy))
    loader.sampler.set_epoch(epoch)
    return loader


def test_loader_resumes_at_the_saved_batch_with_the_same_augmentation():
    full = list(_loader(3))
    first = _loader(3)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    assert state["batch"] == 3 and state["epoch"] == 3
    resumed = _loader(0)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(3)  # Lightning sets the epoch before the iterator runs
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    for (x, y), (fx, fy) in zip(rest, full[3:]):
        assert torch.equal(x, fx) and torch.equal(y, fy)
    assert len(list(resumed)) == len(full)  # the skip applies to one pass only


def test_loader_refuses_state_from_other_data():
    state = {**_loader(1).state_dict(), "seed": 8}
    with pytest.raises(ValueError, match="another data/seed"):
        _loader(1).load_state_dict(state)


def test_rng_states_roundtrip():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    saved = resilience.rng_states()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    resilience.set_rng_states(saved)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


class _Metrics(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.loss = MeanMetric()
        self.m = classification_metrics(6, "train/")


def test_metric_accumulators_survive_a_mid_epoch_restore():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 6, generator=g), torch.randint(0, 6, (16,), generator=g)) for _ in range(4)]
    whole = _Metrics()
    for logits, y in batches:
        whole.loss.update(logits.sum(), weight=16)
        whole.m.update(logits, y)
    first = _Metrics()
    for logits, y in batches[:2]:
        first.loss.update(logits.sum(), weight=16)
        first.m.update(logits, y)
    second = _Metrics()
    load_metric_states(second, metric_states(first))
    for logits, y in batches[2:]:
        second.loss.update(logits.sum(), weight=16)
        second.m.update(logits, y)
    assert torch.equal(second.loss.compute(), whole.loss.compute())
    expected, got = whole.m.compute(), second.m.compute()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    before = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resilience.torch, "save", full_disk)
    with pytest.raises(UserError, match="cannot write .*last.ckpt: no space left on the device; free space"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_full_disk_while_writing_metrics_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write(path, b"{}")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resilience.os, "fsync", full_disk)
    with pytest.raises(UserError, match="no space left on the device"):
        atomic_write(path, b'{"history": []}')
    assert path.read_bytes() == b"{}" and os.listdir(tmp_path) == ["metrics.json"]


def test_sigkill_inside_a_checkpoint_write_leaves_the_previous_file(tmp_path):
    code = (
        "import sys, torch; from cifar_shared.engine.resilience import AtomicCheckpointIO as IO; "
        "IO().save_checkpoint({'state_dict': {'w': torch.ones(1000)}}, sys.argv[1]); "
        "IO().save_checkpoint({'state_dict': {'w': torch.zeros(1000)}}, sys.argv[1])"
    )
    env = {**os.environ, "CIFAR_FAULT": "ckpt_write:2"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "last.ckpt")], env=env, timeout=600)
    assert result.returncode == -9
    assert torch.equal(torch.load(tmp_path / "last.ckpt")["state_dict"]["w"], torch.ones(1000))
    partial = tmp_path / ".last.ckpt.partial"  # the half-written file a rerun deletes
    assert partial.exists() and 0 < partial.stat().st_size < (tmp_path / "last.ckpt").stat().st_size


def test_checkpoint_from_another_package_is_refused(tmp_path):
    from cifar_shared.engine.train import check_checkpoint

    module = torch.nn.Linear(2, 2)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "cifar_run": {"name": "resnet"}}, path)
    before = path.read_bytes()
    with pytest.raises(UserError, match="saved by a resnet run, this is basiccnn"):
        check_checkpoint(path, module, "basiccnn")
    check_checkpoint(path, module, "resnet")
    assert path.read_bytes() == before


@pytest.mark.parametrize("case", ["file", "under_file", "unwritable"])
def test_output_dir_that_cannot_be_a_folder(tmp_path, case):
    (tmp_path / "f").write_text("keep")
    out = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "run", "unwritable": tmp_path / "ro" / "run"}[case]
    if case == "unwritable":
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o500)
        if os.access(tmp_path / "ro", os.W_OK):  # root ignores permissions
            out = __import__("pathlib").Path("/proc/cifar-run/x")
    message = {"file": "is a file", "under_file": "lies under a file", "unwritable": "cannot be created"}[case]
    with pytest.raises(UserError, match=message):
        check_output_dir(out)
    assert (tmp_path / "f").read_text() == "keep"


def _fake_trainer(step: int, lr: float):
    from types import SimpleNamespace

    progress = SimpleNamespace(current=SimpleNamespace(ready=step))
    return SimpleNamespace(current_epoch=0, optimizers=[SimpleNamespace(param_groups=[{"lr": lr}])],
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))


def test_deferred_nan_check_names_the_first_bad_step(tmp_path):
    """The GPU way (no host sync per step): the flag stays on the device until a look, and the look
    reports the first non-finite step, not the latest; every CHECK_EVERY steps, and before a save."""
    guard = resilience.RunGuard(tmp_path, "t", None)
    guard.defer_check = True
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0], start=1):
        guard.on_before_backward(_fake_trainer(step, 0.1 * step), None, torch.tensor(value))  # fewer than CHECK_EVERY: no look yet
    with pytest.raises(UserError, match=r"loss is nan at epoch 1 step 3 \(lr 0\.3\)"):
        guard.on_train_epoch_end(_fake_trainer(5, 0.5), None)  # before ModelCheckpoint writes last.ckpt

    guard = resilience.RunGuard(tmp_path, "t", None)
    guard.defer_check, guard.CHECK_EVERY = True, 2
    guard.on_before_backward(_fake_trainer(1, 0.1), None, torch.tensor(1.0))
    guard.on_before_backward(_fake_trainer(2, 0.1), None, torch.tensor(1.5))  # a look: all finite
    guard.on_before_backward(_fake_trainer(3, 0.1), None, torch.tensor(float("inf")))
    with pytest.raises(UserError, match=r"loss is inf at epoch 1 step 3"):
        guard.on_before_backward(_fake_trainer(4, 0.1), None, torch.tensor(1.0))  # the second look


def test_finite_losses_pass_either_way(tmp_path):
    for deferred in (False, True):
        guard = resilience.RunGuard(tmp_path, "t", None)
        guard.defer_check, guard.CHECK_EVERY = deferred, 3
        for step in range(1, 8):
            guard.on_before_backward(_fake_trainer(step, 0.1), None, torch.tensor(float(step)))
        guard.on_train_epoch_end(_fake_trainer(7, 0.1), None)
