"""The parts that make runs survive kills, Ctrl-C and NaN (end to end: cifar_shared.testing.fault_suite)."""

import errno
import os
import random
import resource
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchmetrics import MeanMetric

from cifar_shared import UserError
from cifar_shared.data.augment import AugmentPolicy, BatchAugment
from cifar_shared.data.loader import ShardedPermutation, TensorBatchLoader
from cifar_shared.engine import atomic, run_state
from cifar_shared.engine import guard as guard_module
from cifar_shared.engine.atomic import AtomicCheckpointIO, atomic_write
from cifar_shared.engine.callbacks import RunRecorder
from cifar_shared.engine.config import check_output_dir
from cifar_shared.engine.guard import RunGuard
from cifar_shared.engine.metrics import classification_metrics
from cifar_shared.engine.run_lock import LOCK_NAME, RunLock
from cifar_shared.engine.run_state import load_metric_states, metric_states
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
    saved = run_state.rng_states()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    run_state.set_rng_states(saved)
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

    monkeypatch.setattr(atomic.torch, "save", full_disk)
    with pytest.raises(UserError, match="cannot write .*last.ckpt: no space left on the device; free space"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_full_disk_while_writing_metrics_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write(path, b"{}")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(UserError, match="no space left on the device"):
        atomic_write(path, b'{"history": []}')
    assert path.read_bytes() == b"{}" and os.listdir(tmp_path) == ["metrics.json"]


# what torch.save raises when the disk fills under its zip writer: a RuntimeError, not an OSError
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0: file write failed"


def test_full_disk_inside_torch_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """torch.save on a full disk raises its writer's RuntimeError (the OSError, if any, only in its
    context): one UserError, the partial file gone, the previous checkpoint intact."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    before = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"x" * 100)
        raise RuntimeError(TORCH_FULL_DISK)

    monkeypatch.setattr(atomic.torch, "save", full_disk)
    with pytest.raises(UserError, match=r"cannot write .*last.ckpt: the write failed \(is the device full\?\); free space"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_a_real_write_failure_inside_torch_save_is_one_line(tmp_path):
    """The real torch.save against a file-size limit (RLIMIT_FSIZE: writes past it fail, as on a
    full disk): whatever torch raises for it becomes the one line, nothing partial is left."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(10)}}, path)
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(UserError, match=r"cannot write .*last.ckpt: .*; free space or set output_dir elsewhere \(the previous last.ckpt is kept\)"):
            AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1_000_000)}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.ckpt"]


def test_a_bug_inside_torch_save_is_not_called_a_full_disk(tmp_path, monkeypatch):
    def bug(obj, f):
        raise RuntimeError("something else broke")

    monkeypatch.setattr(atomic.torch, "save", bug)
    with pytest.raises(RuntimeError, match="something else broke"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "last.ckpt")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # a subprocess that imports the training stack
def test_sigkill_inside_a_checkpoint_write_leaves_the_previous_file(tmp_path):
    code = (
        "import sys, torch; from cifar_shared.testing.faults import FaultyCheckpointIO as IO; "
        "IO(die_at=2).save_checkpoint({'state_dict': {'w': torch.ones(1000)}}, sys.argv[1]); "
        "IO(die_at=2).save_checkpoint({'state_dict': {'w': torch.zeros(1000)}}, sys.argv[1])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "last.ckpt")], timeout=600)
    assert result.returncode == -9
    assert torch.equal(torch.load(tmp_path / "last.ckpt")["state_dict"]["w"], torch.ones(1000))
    partial = tmp_path / ".last.ckpt.partial"  # the half-written file a rerun deletes
    assert partial.exists() and 0 < partial.stat().st_size < (tmp_path / "last.ckpt").stat().st_size


def test_one_signal_delivered_twice_is_one_interrupt_a_later_one_stops_now(tmp_path, monkeypatch):
    """The same SIGINT twice within REPEAT_WINDOW_S (``uv run`` forwards it to a group that got it
    too) must let the save finish; a second Ctrl-C after the window stops at once."""
    clock = [100.0]
    monkeypatch.setattr(guard_module.time, "monotonic", lambda: clock[0])

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(guard_module.os, "_exit", exit_now)
    g = RunGuard(tmp_path, "t", None)
    g._on_signal(signal.SIGINT, None)
    clock[0] += 0.2
    g._on_signal(signal.SIGINT, None)  # the same one again: ignored
    assert g.signum == signal.SIGINT
    clock[0] += g.REPEAT_WINDOW_S
    with pytest.raises(SystemExit) as stopped:
        g._on_signal(signal.SIGINT, None)  # the user's second Ctrl-C
    assert stopped.value.code == 130
    g = RunGuard(tmp_path, "t", None)
    g._on_signal(signal.SIGINT, None)
    with pytest.raises(SystemExit):
        g._on_signal(signal.SIGTERM, None)  # another signal is never a duplicate


def test_a_copy_held_back_by_the_save_is_still_one_interrupt_while_exiting(tmp_path, monkeypatch):
    """A save can hold a copy's Python handler back past the window (CI saw exit -2, a KeyboardInterrupt
    raised while exiting): the window restarts at the resume line, and a copy after it ends the exit
    with the interrupt's status, never Python's default handler."""
    clock = [100.0]
    monkeypatch.setattr(guard_module.time, "monotonic", lambda: clock[0])
    exits = []
    monkeypatch.setattr(guard_module.os, "_exit", exits.append)
    monkeypatch.setattr(guard_module.atexit, "register", lambda *a: None)  # this test process is not exiting
    g = RunGuard(tmp_path, "t", None)
    g.install_signals()
    try:
        g._on_signal(signal.SIGINT, None)
        clock[0] += 5.0  # a slow save
        with pytest.raises(SystemExit) as interrupted:
            g.exit_interrupted(1, 3)
        assert interrupted.value.code == 130
    finally:
        g.restore_signals()
    try:
        interrupted.value.exiting()  # what the CLI does before the process ends
        handler = signal.getsignal(signal.SIGINT)
        clock[0] += 0.5
        handler(signal.SIGINT, None)  # the held-back copy: ignored
        assert exits == []
        clock[0] += g.REPEAT_WINDOW_S
        handler(signal.SIGINT, None)  # a real second Ctrl-C while exiting
        assert exits == [130]
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_an_in_process_caller_gets_its_own_handler_back_after_an_interrupt(tmp_path, monkeypatch):
    """A notebook calls train() in its kernel: after the interrupt's SystemExit its own Ctrl-C handler
    is back (a late copy of the interrupt dropped), not one that would end the kernel, and a second
    train() saves and restores that same handler, not a filter around a filter."""
    clock = [100.0]
    monkeypatch.setattr(guard_module.time, "monotonic", lambda: clock[0])
    calls = []

    def kernel_handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, kernel_handler)
    try:
        g = RunGuard(tmp_path, "t", None)
        g.install_signals()
        try:
            g._on_signal(signal.SIGINT, None)
            with pytest.raises(SystemExit):
                g.exit_interrupted(1, 3)
        finally:
            g.restore_signals()
        restored = signal.getsignal(signal.SIGINT)
        restored(signal.SIGINT, None)  # the interrupt's copy, within the window: dropped
        assert calls == []
        clock[0] += g.REPEAT_WINDOW_S
        restored(signal.SIGINT, None)  # the user's next Ctrl-C: the kernel's own handler
        assert calls == [signal.SIGINT]
        again = RunGuard(tmp_path, "t", None)
        again.install_signals()
        again.restore_signals()
        assert signal.getsignal(signal.SIGINT) is kernel_handler
    finally:
        signal.signal(signal.SIGINT, previous)


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
    guard = RunGuard(tmp_path, "t", None)
    guard.defer_check = True
    for step, value in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0], start=1):
        guard.on_before_backward(_fake_trainer(step, 0.1 * step), None, torch.tensor(value))  # fewer than CHECK_EVERY: no look yet
    with pytest.raises(UserError, match=r"loss is nan at epoch 1 step 3 \(lr 0\.3\)"):
        guard.on_train_epoch_end(_fake_trainer(5, 0.5), None)  # before ModelCheckpoint writes last.ckpt

    guard = RunGuard(tmp_path, "t", None)
    guard.defer_check, guard.CHECK_EVERY = True, 2
    guard.on_before_backward(_fake_trainer(1, 0.1), None, torch.tensor(1.0))
    guard.on_before_backward(_fake_trainer(2, 0.1), None, torch.tensor(1.5))  # a look: all finite
    guard.on_before_backward(_fake_trainer(3, 0.1), None, torch.tensor(float("inf")))
    with pytest.raises(UserError, match=r"loss is inf at epoch 1 step 3"):
        guard.on_before_backward(_fake_trainer(4, 0.1), None, torch.tensor(1.0))  # the second look


def test_finite_losses_pass_either_way(tmp_path):
    for deferred in (False, True):
        guard = RunGuard(tmp_path, "t", None)
        guard.defer_check, guard.CHECK_EVERY = deferred, 3
        for step in range(1, 8):
            guard.on_before_backward(_fake_trainer(step, 0.1), None, torch.tensor(float(step)))
        guard.on_train_epoch_end(_fake_trainer(7, 0.1), None)


# --------------------------------------------------------------------------- one run per folder

@pytest.fixture
def held_folder(tmp_path):
    """A folder another process (alive until the test ends) holds with ``RunLock``: its pid and the folder."""
    folder = tmp_path / "run"
    folder.mkdir()
    code = ("import sys, time; from cifar_shared.engine.run_lock import RunLock; "
            "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield holder, folder
    holder.kill()
    holder.wait()


def test_a_second_run_on_a_live_runs_folder_is_one_line_and_writes_nothing(held_folder, capsys):
    from cifar_shared.testing.fault_suite import run_in_process, tiny_config

    holder, folder = held_folder
    path, _ = tiny_config(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, out, err = run_in_process(path, capsys)
    assert code == 2 and out == "", err
    assert err.splitlines() == [err.strip()] and err.startswith(f"error: output_dir {folder} is in use by another run "
                                                                 f"(pid {holder.pid} on {socket.gethostname()}): ")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the holder's lock file, nothing else


def test_ddp_ranks_other_than_0_do_not_take_the_lock(held_folder, monkeypatch):
    from cifar_shared.engine import train as train_module
    from cifar_shared.testing.fault_suite import tiny_config

    _, folder = held_folder
    _, cfg = tiny_config(folder)
    monkeypatch.setattr(train_module.rank_zero_only, "rank", 1)
    monkeypatch.setattr(train_module, "_train_in", lambda cfg, out, stale="": {"ran": str(out)})
    assert train_module.train(cfg) == {"ran": str(folder)}


def test_a_killed_runs_lock_is_taken_over_and_every_run_releases_its_own(held_folder, capsys):
    """The kernel drops a killed holder's lock: the next run takes the folder over and says so; a
    run that stops on a user error releases the folder too (here: an unreadable last.ckpt)."""
    from cifar_shared.testing.fault_suite import run_in_process, tiny_config

    holder, folder = held_folder
    holder.kill()
    holder.wait()
    assert (folder / LOCK_NAME).read_text() == f"pid {holder.pid} on {socket.gethostname()}\n"  # left behind
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"torn")
    path, _ = tiny_config(folder)
    code, _, err = run_in_process(path, capsys)
    assert code == 2 and "checkpoint" in err and "unreadable" in err, err
    assert f"took over {folder / LOCK_NAME} from a run that is no longer running (pid {holder.pid} on " in (folder / "train.log").read_text()
    assert not (folder / LOCK_NAME).exists()
    with RunLock(folder) as lock:  # free again, and nothing stale left to report
        assert lock.previous == ""
        with pytest.raises(UserError, match="in use by another run in this process"):
            RunLock(folder).acquire()
    assert not (folder / LOCK_NAME).exists()
