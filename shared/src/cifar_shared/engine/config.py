"""Config checks that Hydra cannot do: types and ranges of the values users override most."""

from __future__ import annotations

import os
import tempfile
from numbers import Integral, Real
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cifar_shared.errors import UserError

_MISSING = object()


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)


def _require(cfg: DictConfig, key: str, kind: str, ok, rule: str) -> None:
    value = _get(cfg, key)
    if value is _MISSING:
        return
    is_int = isinstance(value, Integral) and not isinstance(value, bool)
    is_num = isinstance(value, Real) and not isinstance(value, bool)
    typed = {"int": is_int, "number": is_num, "bool": isinstance(value, bool), "flag": isinstance(value, bool) or value == "auto"}[kind]
    if not typed or not ok(value):
        raise UserError(f"{key}={value!r} is invalid: it must be {rule} (e.g. {key}={_EXAMPLES.get(kind, 1)})")


_EXAMPLES = {"int": 10, "number": 0.1, "bool": "true", "flag": "auto"}

_RULES = [
    ("seed", "int", lambda v: v >= 0, "an integer >= 0"),
    ("epochs", "int", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.max_epochs", "int", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", "int", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.accumulate_grad_batches", "int", lambda v: v >= 1, "an integer >= 1 (batches per optimizer step)"),
    ("lr", "number", lambda v: v > 0, "a number > 0"),
    ("optim.lr", "number", lambda v: v > 0, "a number > 0"),
    ("optim.weight_decay", "number", lambda v: v >= 0, "a number >= 0"),
    ("label_smoothing", "number", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("data.val_fraction", "number", lambda v: 0 < v < 1, "a number in (0, 1): checkpoints keep the best model on validation"),
    ("data.num_workers", "int", lambda v: v >= 0, "an integer >= 0"),
    ("augment.crop_padding", "int", lambda v: 0 <= v <= 16, "an integer in [0, 16]"),
    ("augment.flip", "bool", lambda v: True, "true or false"),
    ("augment.cutout", "int", lambda v: v >= 0, "an integer >= 0 (hole side in pixels)"),
    ("augment.cutout_p", "number", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("channels_last", "flag", lambda v: True, "true, false or auto (on for CUDA GPUs)"),
    ("compile", "flag", lambda v: True, "true, false or auto (on for CUDA GPUs)"),
    ("lr_find.num_steps", "int", lambda v: v >= 5, "an integer >= 5"),
    ("lr_find.min_lr", "number", lambda v: v > 0, "a number > 0"),
    ("lr_find.max_lr", "number", lambda v: v > 0, "a number > 0"),
]

_CHOICES = {
    "augment.pipeline": ("tensor", "per_sample"),
    "data.name": ("cifar10", "cifar100", "folder", "synthetic"),
    "lr_find.rule": ("auto", "valley", "onecycle", "min_over_10", "steepest"),
}


def check_config(cfg: DictConfig, choices: dict[str, tuple[str, ...]] | None = None) -> None:
    """Raise ``UserError`` naming the first bad value and what it should be; ``choices`` adds a
    package's own closed sets of values to the shared ones."""
    try:
        OmegaConf.resolve(OmegaConf.create(OmegaConf.to_container(cfg)))
    except Exception as e:
        raise UserError(f"config does not resolve: {str(e).splitlines()[0]}") from None
    for key, kind, ok, rule in _RULES:
        _require(cfg, key, kind, ok, rule)
    for key, allowed in {**_CHOICES, **(choices or {})}.items():
        value = _get(cfg, key)
        if value is not _MISSING and value not in allowed:
            raise UserError(f"{key}={value!r} is invalid: choose one of {', '.join(allowed)}")
    if _get(cfg, "data.name") in ("folder",) and _get(cfg, "data.root") in (None, "???", _MISSING):
        raise UserError("data=folder needs data.root=PATH (a folder with one subfolder per class)")
    lo, hi = _get(cfg, "lr_find.min_lr"), _get(cfg, "lr_find.max_lr")
    if isinstance(lo, Real) and isinstance(hi, Real) and lo >= hi:
        raise UserError(f"lr_find.min_lr={lo} must be below lr_find.max_lr={hi}: widen the sweep")
    out = _get(cfg, "output_dir")
    if isinstance(out, str):
        check_output_dir(Path(out).expanduser())
    size = _get(cfg, "data.image_size")
    cut = _get(cfg, "augment.cutout")
    if isinstance(size, int) and isinstance(cut, int) and cut > size:
        raise UserError(f"augment.cutout={cut} is larger than the images ({size} px): make it smaller")
    check_accelerator(cfg)


def check_output_dir(out: Path) -> None:
    """Before Hydra or ``train`` makes the folder: an output_dir that is a file, lies under a file,
    or sits where nothing can be written is one line, not a traceback."""
    for p in (out, *out.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            what = "is a file" if p == out else f"lies under a file ({p})"
            raise UserError(f"output_dir {out} {what}: set output_dir=PATH to a folder")
        if p == out:
            return  # an existing run folder (resume): train() reports what it cannot write
        try:  # a probe folder made and removed at once: permissions, read-only mounts, /proc ...
            os.rmdir(tempfile.mkdtemp(prefix=".cifar-probe-", dir=p))
        except OSError as e:
            raise UserError(f"output_dir {out} cannot be created: {p} is not writable ({e.strerror}); set output_dir=PATH elsewhere") from None
        return


# trainer.accelerator values that ask for one kind of device, and how to tell it is there
_DEVICE_ACCELERATORS = {"gpu": "a CUDA GPU", "cuda": "a CUDA GPU", "mps": "an Apple MPS device"}


def accelerator_missing(accelerator) -> str | None:
    """What ``accelerator`` asks for when this machine lacks it (``"a CUDA GPU"``), else None.
    torch is imported only for a value that asks for a device: config checks run before heavy imports."""
    wanted = _DEVICE_ACCELERATORS.get(str(accelerator).lower())
    if wanted is None:
        return None
    import torch

    available = torch.backends.mps.is_available() if str(accelerator).lower() == "mps" else torch.cuda.is_available()
    return None if available else wanted


def check_accelerator(cfg: DictConfig) -> None:
    """``trainer.accelerator=gpu`` (or cuda, mps) on a machine without one: one line before any run
    file is written, not Lightning's traceback after config.yaml and train.log exist."""
    accelerator = _get(cfg, "trainer.accelerator")
    missing = accelerator_missing(accelerator)
    if missing:
        raise UserError(f"trainer.accelerator={accelerator} asks for {missing}, but torch finds none on this machine: "
                        "set trainer.accelerator=auto (whatever is there) or trainer.accelerator=cpu")
