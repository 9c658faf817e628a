"""The seam for adding callbacks to every run of this process from outside its config.

A factory added with ``add_run_callbacks`` is called by every ``build_trainer`` from then on, and
its callbacks go first in the trainer's list (before ``RunGuard``: they see a batch's end before
the guard saves or exits). The test harness installs its fault injector here
(``cifar_shared.testing.faults``); production code installs nothing and reads nothing from the
environment. A package's own callbacks belong in its config (``callbacks.extra``) instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytorch_lightning as pl

CallbackFactory = Callable[[], list[pl.Callback]]
_factories: list[CallbackFactory] = []


def add_run_callbacks(factory: CallbackFactory) -> None:
    _factories.append(factory)


def remove_run_callbacks(factory: CallbackFactory) -> None:
    _factories.remove(factory)


@contextmanager
def run_callbacks_added(factory: CallbackFactory) -> Iterator[None]:
    """``factory``'s callbacks in every trainer built inside the ``with`` block."""
    add_run_callbacks(factory)
    try:
        yield
    finally:
        remove_run_callbacks(factory)


def run_callbacks() -> list[pl.Callback]:
    """The added callbacks, fresh for one trainer."""
    return [cb for factory in _factories for cb in factory()]
