"""A quiet console: our own lines, warnings a user can act on, a progress bar only on a terminal.

Lightning and torch talk a lot (accelerator inventory, advertising tips, "Loading
`train_dataloader`...", deprecation warnings of their own internals). Our epoch lines already say
what a user needs, so this module routes Lightning's loggers through ours and drops the chatter:
- console (stdout): ``cifar*`` records at INFO and up, anything else at WARNING and up;
- ``train.log``: the same plus other libraries' INFO records, minus the chatter below.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

# Library messages nobody acts on (matched at the start of the message).
CHATTER = re.compile(
    r"^(?:"
    r"💡 Tip|"
    r"(?:GPU|TPU|HPU|IPU) available:|"
    r"Loading `train_dataloader` to estimate number of stepping batches|"
    r"`Trainer\.fit` stopped: `max_epochs=|"
    r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES|"
    r"Seed set to|"
    r"Initializing distributed: GLOBAL_RANK|"
    r"-{20,}\ndistributed_backend=|"
    r"Checkpoint directory .* exists and is not empty"  # our runs resume from their folder by design
    r")"
)

# Warnings about library internals, not about anything in the user's config or data.
LIBRARY_WARNINGS = (
    (r".*isinstance\(treespec, LeafSpec\)", FutureWarning),  # Lightning's pytree helper vs torch >= 2.9
    (r".*isinstance\(treespec, LeafSpec\)", DeprecationWarning),
    (r"Checkpoint directory .* exists and is not empty", Warning),
    # our metrics are logged per epoch, so Lightning's per-step logging interval has nothing to do
    (r"The number of training batches \(\d+\) is smaller than the logging interval", Warning),
    # under DDP: the best val acc and the lr are the same on every rank (metrics sync themselves)
    (r"It is recommended to use `self\.log\('(?:val/acc_best|lr)', \.\.\., sync_dist=True\)`", Warning),
)

LIBRARY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning", "lightning.pytorch", "lightning.fabric")

# torch's own loggers print through torch's handler, not ours: (logger, message start) to drop.
# compile=true on a machine with a CUDA toolkit but no GPU: inductor builds C++ kernels for the CPU.
TORCH_CHATTER = (("torch.utils.cpp_extension", "No CUDA runtime is found"),)


class _DropStart(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def is_terminal() -> bool:
    """True when both output streams are terminals: only then can a progress bar redraw in place."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def is_chatter(record: logging.LogRecord) -> bool:
    return not record.name.startswith("cifar") and bool(CHATTER.match(record.getMessage()))


class ConsoleFilter(logging.Filter):
    """Our records from INFO; other libraries' only from WARNING; never the chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("cifar"):
            return True
        return record.levelno >= logging.WARNING and not is_chatter(record)


class FileFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_chatter(record)


def quiet_libraries() -> None:
    """Send Lightning's loggers through the root handlers (ours) and silence internal deprecations."""
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        for h in list(lib.handlers):  # Lightning adds its own stderr handler when root has none
            if isinstance(h, logging.StreamHandler) and not getattr(h, "_cifar", False):
                lib.removeHandler(h)
        lib.propagate = True
    for message, category in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, start in TORCH_CHATTER:
        lib = logging.getLogger(name)
        if not any(isinstance(f, _DropStart) and f.start == start for f in lib.filters):
            lib.addFilter(_DropStart(start))
