"""One run per run folder: two runs writing one folder would tear each other's checkpoints.

A run holds ``OUTPUT_DIR/.run.lock`` for its life: a POSIX lock (``fcntl.lockf``) on the file,
which records the holder's pid and host. The kernel drops the lock when its process dies, however
it dies (kill -9 included), so a file left by a dead run is stale and the next run takes it over
(with a log line); a POSIX lock is not inherited by forked DataLoader workers, which could outlive
a killed run for a moment. A second run on a folder a live run holds is one
``UserError`` before it writes anything. Under DDP only rank 0 takes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from cifar_shared.errors import UserError

LOCK_NAME = ".run.lock"
_held: set[Path] = set()  # POSIX locks are per process: a second run in this process must be refused by hand


class RunLock:
    """``with RunLock(folder) as lock:`` holds the folder; ``lock.previous`` names a stale holder taken over."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.previous = ""  # "pid P on HOST" of a dead run whose lock file this run took over
        self._fd: int | None = None
        self._key = self.path.resolve()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self._key in _held:
            raise UserError(f"output_dir {self.path.parent} is in use by another run in this process: set output_dir elsewhere")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UserError(f"cannot create {self.path} ({e.strerror}): set output_dir=PATH to a writable folder") from None
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read(fd)
                os.close(fd)
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    raise UserError(f"cannot lock {self.path} ({e.strerror}): set output_dir to a folder on a local disk") from None
                raise UserError(f"output_dir {self.path.parent} is in use by another run ({holder or 'its pid not written yet'}): "
                                f"wait for it to end or set output_dir elsewhere (if no run uses it, delete {self.path})") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the one now there
        self.previous = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _held.add(self._key)

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # still locked: no one takes the file while it goes
        os.close(self._fd)  # drops the lock
        self._fd = None
        _held.discard(self._key)


def _read(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
