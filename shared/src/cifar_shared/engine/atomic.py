"""Files a kill cannot tear: every checkpoint and ``metrics.json`` is written aside (``.NAME.partial``)
and renamed over the old file, so a kill during a write leaves the previous good file; a failed
write (a full disk) is one ``UserError``, the partial file removed, the previous file kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from cifar_shared.errors import UserError

# torch.save reports a failed write as a RuntimeError from its zip writer, not as an OSError
# ("PytorchStreamWriter failed writing file data/0: file write failed", "... unexpected pos N vs M")
TORCH_WRITE_FAILURES = ("PytorchStreamWriter", "inline_container", "file write failed")


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def failed_write(e: BaseException) -> OSError | None:
    """The OSError behind a failed write: ``e`` itself, or for torch's writer RuntimeError the
    OSError in its context (an empty one where torch kept none); None for anything else (a bug)."""
    if isinstance(e, OSError):
        return e
    if not (isinstance(e, RuntimeError) and any(s in str(e) for s in TORCH_WRITE_FAILURES)):
        return None
    seen = e.__context__
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__context__
    return seen or OSError()


def _disk_error(path: Path, e: OSError) -> UserError:
    if e.errno == errno.ENOSPC:
        what = "no space left on the device"
    else:
        what = e.strerror or "the write failed (is the device full?)"
    return UserError(f"cannot write {path}: {what}; free space or set output_dir elsewhere (the previous {path.name} is kept)")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over ``path``: readers see the old or the new file."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _disk_error(path, e) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic (``RunGuard`` refuses models with NaN/inf weights)."""

    def write(self, checkpoint: dict, f) -> None:
        """The serialization into the open partial file (tests replace it to fail half-way)."""
        torch.save(checkpoint, f)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        tmp = partial_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                self.write(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            cause = failed_write(e)
            tmp.unlink(missing_ok=True)
            if cause is None:
                raise
            raise _disk_error(path, cause) from None
