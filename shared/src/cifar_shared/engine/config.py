"""Config checks that Hydra cannot do: types and ranges of the values users override most."""

from __future__ import annotations

import os
import tempfile
from numbers import Integral, Real
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from cifar_shared.errors import UserError

_MISSING = object()


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _devices(value) -> bool:
    """Lightning's ``devices``: a count (-1: all), ``auto``, a list of ids, or ids as text ("0,1")."""
    if _is_int(value):
        return value >= 1 or value == -1
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        return value == "auto" or (bool(parts) and all(p.lstrip("-").isdigit() for p in parts))
    if isinstance(value, ListConfig | list | tuple):
        return len(value) > 0 and all(_is_int(v) and v >= 0 for v in value)
    return False


# kind -> (is the value of that type, an example of a good value); a kind ending in "?" also takes null
_KINDS = {
    "int": (_is_int, 10),
    "number": (_is_number, 0.1),
    "bool": (lambda v: isinstance(v, bool), "true"),
    "flag": (lambda v: isinstance(v, bool) or v == "auto", "auto"),
    "ints": (lambda v: isinstance(v, ListConfig | list | tuple) and all(_is_int(x) for x in v), "[32,64]"),
    "devices": (_devices, 1),
}


def _require(cfg: DictConfig, key: str, kind: str, ok, rule: str, example=None) -> None:
    value = _get(cfg, key)
    if value is _MISSING or (value is None and kind.endswith("?")):
        return
    typed, default_example = _KINDS[kind.rstrip("?")]
    example = default_example if example is None else example
    if not typed(value) or not ok(value):
        shown = list(value) if isinstance(value, ListConfig) else value
        raise UserError(f"{key}={shown!r} is invalid: it must be {rule} (e.g. {key}={example})")


def check_rules(cfg: DictConfig, rules) -> None:
    """Check ``(key, kind, ok, rule[, example])`` rows (``_RULES`` is the shared table; each package
    passes its model's through its ``check``): the first value of the wrong type or range is one
    ``UserError``. ``kind`` is int, number, bool, flag (bool or auto), ints (a list of integers) or
    devices; a trailing ``?`` also accepts null. Keys the config lacks are skipped."""
    for row in rules:
        _require(cfg, *row)


def check_choices(cfg: DictConfig, choices: dict) -> None:
    """Closed sets of values: ``{key: (allowed, ...)}``."""
    for key, allowed in choices.items():
        value = _get(cfg, key)
        if value is not _MISSING and (isinstance(value, ListConfig | DictConfig) or value not in allowed):
            shown = dict.fromkeys(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
            raise UserError(f"{key}={value!r} is invalid: choose one of {', '.join(shown)}")


def _probability(v) -> bool:
    return 0 <= v <= 1


def _fraction_or_count(v) -> bool:
    """Lightning's ``limit_*_batches``: a fraction of the batches (float in [0, 1]) or a count (int >= 0)."""
    return v >= 0 if _is_int(v) else 0 <= v <= 1


_RULES = [
    ("seed", "int", lambda v: v >= 0, "an integer >= 0"),
    ("epochs", "int", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.max_epochs", "int", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", "int", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.accumulate_grad_batches", "int", lambda v: v >= 1, "an integer >= 1 (batches per optimizer step)"),
    ("trainer.devices", "devices", lambda v: True, "a device count >= 1 (-1: all), auto, or a list of device ids such as [0,1]", 1),
    ("trainer.num_nodes", "int", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.gradient_clip_val", "number?", lambda v: v >= 0, "null or a number >= 0 (the gradient norm to clip at)", 1.0),
    ("trainer.log_every_n_steps", "int", lambda v: v >= 1, "an integer >= 1"),
    ("trainer.num_sanity_val_steps", "int", lambda v: v >= -1, "an integer >= 0 (-1: the whole validation split)"),
    ("trainer.limit_train_batches", "number?", _fraction_or_count, "null, a fraction in [0, 1] or a batch count >= 0"),
    ("trainer.limit_val_batches", "number?", _fraction_or_count, "null, a fraction in [0, 1] or a batch count >= 0"),
    ("trainer.limit_test_batches", "number?", _fraction_or_count, "null, a fraction in [0, 1] or a batch count >= 0"),
    ("trainer.benchmark", "bool?", lambda v: True, "null, true or false"),
    ("trainer.enable_progress_bar", "bool", lambda v: True, "true or false"),
    ("callbacks.checkpoint.every_n_minutes", "number?", lambda v: v >= 0,
     "null or a number of minutes >= 0 between mid-epoch checkpoints (null or 0: epoch ends only)", 10),
    ("callbacks.checkpoint.keep_every_epoch", "bool", lambda v: True, "true or false"),
    ("test_after_fit", "bool", lambda v: True, "true or false"),
    ("callbacks.checkpoint.save_top_k", "int", lambda v: v >= -1, "an integer >= 0 (best checkpoints kept; -1: all)"),
    ("callbacks.refresh_rate", "int", lambda v: v >= 1, "an integer >= 1"),
    ("lr", "number", lambda v: v > 0, "a number > 0"),
    ("optim.lr", "number", lambda v: v > 0, "a number > 0"),
    ("optim.weight_decay", "number", lambda v: v >= 0, "a number >= 0"),
    ("label_smoothing", "number", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("data.image_size", "int", lambda v: v >= 1, "a positive number of pixels (images are resized to it)", 32),
    ("data.num_classes", "int", lambda v: v >= 2, "an integer >= 2 (a classifier needs two classes)", 10),
    ("data.train_size", "int", lambda v: v >= 2, "an integer >= 2 (images to train and validate on)", 2000),
    ("data.test_size", "int", lambda v: v >= 1, "an integer >= 1", 500),
    ("data.val_fraction", "number", lambda v: 0 < v < 1, "a number in (0, 1): checkpoints keep the best model on validation"),
    ("data.test_fraction", "number", lambda v: 0 <= v < 1, "a number in [0, 1) (the test split held out of the folder)", 0.1),
    ("data.num_workers", "int", lambda v: v >= 0, "an integer >= 0"),
    ("augment.crop_padding", "int", lambda v: 0 <= v <= 16, "an integer in [0, 16]"),
    ("augment.flip", "bool", lambda v: True, "true or false"),
    ("augment.cutout", "int", lambda v: v >= 0, "an integer >= 0 (hole side in pixels)"),
    ("augment.cutout_p", "number", _probability, "a probability in [0, 1]"),
    ("augment.rotate", "number", lambda v: 0 <= v <= 180, "a number of degrees in [0, 180]", 10),
    ("augment.color_jitter_p", "number", _probability, "a probability in [0, 1]"),
    ("augment.grayscale_p", "number", _probability, "a probability in [0, 1]"),
    ("augment.num_ops", "int", lambda v: v >= 0, "an integer >= 0 (RandAugment ops per image)"),
    ("augment.magnitude", "int", lambda v: 0 <= v <= 30, "an integer in [0, 30] (RandAugment's magnitude bins)", 9),
    ("channels_last", "flag", lambda v: True, "true, false or auto (on for CUDA GPUs)"),
    ("compile", "flag", lambda v: True, "true, false or auto (on for CUDA GPUs)"),
    ("lr_find.num_steps", "int", lambda v: v >= 5, "an integer >= 5"),
    ("lr_find.min_lr", "number", lambda v: v > 0, "a number > 0"),
    ("lr_find.max_lr", "number", lambda v: v > 0, "a number > 0"),
]

# Lightning's precision names, plus this repo's "auto" (engine.train.resolve_precision)
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", 16, 32, 64, "16", "32", "64", "bf16")

_CHOICES = {
    "augment.pipeline": ("tensor", "per_sample"),
    "data.name": ("cifar10", "cifar100", "folder", "synthetic"),
    "lr_find.rule": ("auto", "valley", "onecycle", "min_over_10", "steepest"),
    "trainer.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),  # what train() places data and models on
    "trainer.precision": PRECISIONS,
    "trainer.deterministic": ("auto", True, False, "warn"),
    "callbacks.checkpoint.mode": ("max", "min"),
    "callbacks.progress_bar": ("rich", "tqdm"),
}


def check_config(cfg: DictConfig, choices: dict[str, tuple[str, ...]] | None = None, writable: bool = True) -> None:
    """Raise ``UserError`` naming the first bad value and what it should be; ``choices`` adds a
    package's own closed sets of values to the shared ones. ``writable=False``: a command that
    only reads an existing run folder (writing its results elsewhere) does not need it writable."""
    try:
        OmegaConf.resolve(OmegaConf.create(OmegaConf.to_container(cfg)))
    except Exception as e:
        raise UserError(f"config does not resolve: {str(e).splitlines()[0]}") from None
    check_rules(cfg, _RULES)
    check_choices(cfg, {**_CHOICES, **(choices or {})})
    if _get(cfg, "data.name") in ("folder",) and _get(cfg, "data.root") in (None, "???", _MISSING):
        raise UserError("data=folder needs data.root=PATH (a folder with one subfolder per class)")
    lo, hi = _get(cfg, "lr_find.min_lr"), _get(cfg, "lr_find.max_lr")
    if isinstance(lo, Real) and isinstance(hi, Real) and lo >= hi:
        raise UserError(f"lr_find.min_lr={lo} must be below lr_find.max_lr={hi}: widen the sweep")
    out = _get(cfg, "output_dir")
    if isinstance(out, str):
        check_output_dir(Path(out).expanduser(), writable)
    size = _get(cfg, "data.image_size")
    cut = _get(cfg, "augment.cutout")
    if isinstance(size, int) and isinstance(cut, int) and cut > size:
        raise UserError(f"augment.cutout={cut} is larger than the images ({size} px): make it smaller")
    check_accelerator(cfg)


def check_output_dir(out: Path, writable: bool = True) -> None:
    """Before Hydra or ``train`` makes the folder: an output_dir that is a file, lies under a file,
    or sits where nothing can be written (an existing run folder included: a resume appends to its
    train.log) is one line, not a traceback."""
    for p in (out, *out.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            what = "is a file" if p == out else f"lies under a file ({p})"
            raise UserError(f"output_dir {out} {what}: set output_dir=PATH to a folder")
        if p == out and not writable:
            return
        problem = _not_writable(p)
        if p == out:
            log = out / "train.log"
            if problem is None and log.exists() and not os.access(log, os.W_OK):
                problem = f"{log} is read-only"
            if problem is not None:
                raise UserError(f"run folder {out} cannot be written ({problem}): make it writable, or set output_dir=PATH elsewhere")
            return
        if problem is not None:
            raise UserError(f"output_dir {out} cannot be created: {p} is not writable ({problem}); set output_dir=PATH elsewhere")
        return


def _not_writable(folder: Path) -> str | None:
    """Why nothing can be made in ``folder`` (permissions, a read-only mount, /proc ...), else None:
    a probe folder made and removed at once, which asks the file system itself."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cifar-probe-", dir=folder))
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


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
