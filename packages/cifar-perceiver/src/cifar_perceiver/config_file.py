"""The original project's YAML config, read and mapped onto this repo's Hydra keys.

The original kept everything in one file with four sections::

    device: cpu                      # cuda | cpu | mps | auto
    model: {input_dim: 37, depth: 1, num_latents: 256, ...}
    training: {lr: 5.0e-4, batch_size: 256, epochs: 100, warmup_epochs: 5, scheduler: cosine, ...}
    augmentation: {type: randaug, num_ops: 2, magnitude: 9}

``overrides_from_file`` turns such a file into ``key=value`` overrides (the table in
docs/cifar-perceiver.md); the command line's own overrides follow them and win. Anything the file
says that has no meaning here is refused with one line naming it and the known names, before
torch is imported. Nothing in this module imports torch.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from cifar_shared.errors import UserError


def fourier_input_dim(num_freq_bands: int, channels: int = 3, axes: int = 2) -> int:
    """Width of one pixel after Fourier encoding: its colours, plus per axis a sine and a cosine
    per band and the raw position: 3 + 2 x (2 x bands + 1), so 37 for 8 bands."""
    return channels + axes * (2 * num_freq_bands + 1)


def check_input_dim(input_dim, num_freq_bands: int) -> None:
    """The original's ``input_dim`` is derived from ``num_freq_bands``; a value that disagrees is a mistake."""
    if input_dim is None:
        return
    fits = fourier_input_dim(num_freq_bands)
    if input_dim != fits:
        raise UserError(
            f"model.input_dim={input_dim} disagrees with model.num_freq_bands={num_freq_bands}: input_dim = "
            f"3 + 2 x (2 x num_freq_bands + 1) = {fits}; set input_dim: {fits} (or leave it out), or change num_freq_bands"
        )


# model keys (perceiver-pytorch's arguments) and the type each takes
MODEL_KEYS = {
    "num_freq_bands": int, "max_freq": float, "depth": int, "num_latents": int, "latent_dim": int,
    "cross_heads": int, "latent_heads": int, "cross_dim_head": int, "latent_dim_head": int,
    "attn_dropout": float, "ff_dropout": float, "weight_tie_layers": bool, "self_per_cross_attn": int,
    "input_dim": int,
}
# training key -> (Hydra key, type)
TRAINING_KEYS = {
    "lr": ("lr", float),
    "batch_size": ("batch_size", int),
    "epochs": ("epochs", int),
    "seed": ("seed", int),
    "weight_decay": ("optim.weight_decay", float),
    "warmup_epochs": ("scheduler.warmup_epochs", float),
    "min_lr": ("scheduler.min_lr", float),  # cosine only
    "step_epochs": ("scheduler.step_epochs", float),  # step only
    "gamma": ("scheduler.gamma", float),  # step only
    "accumulate_grad_batches": ("trainer.accumulate_grad_batches", int),
    "gradient_clip_val": ("trainer.gradient_clip_val", float),
    "label_smoothing": ("label_smoothing", float),
    "optimizer": ("optim", str),
    "scheduler": ("scheduler", str),
    "mixed_precision": ("trainer.precision", bool),
}
SCHEDULERS = ("cosine", "step")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULER_ONLY = {"min_lr": "cosine", "step_epochs": "step", "gamma": "step"}
DEVICES = ("cuda", "cpu", "mps", "auto")
# augmentation type of the original -> shared augment config
AUGMENTATIONS = {"standard": "crop_flip", "randaug": "randaug", "moco": "moco", "none": "none"}
SECTIONS = ("device", "model", "training", "augmentation")
# augmentation keys of the original and their types (the shared config check then bounds the values)
AUGMENTATION_TYPES = {"num_ops": int, "magnitude": int}


def hydra_value(value) -> str:
    """A YAML value as Hydra override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if text.replace("_", "").replace("-", "").replace(".", "").isalnum() else "'" + text.replace("'", "\\'") + "'"


def _typed(where: str, value, kind: type, path: Path):
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise UserError(f"{where}: {value!r} in {path} is invalid: it must be {_KIND[kind]}")
    return value


_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a name"}


def _section(data: dict, name: str, path: Path) -> dict:
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise UserError(f"section '{name}' in {path} must be a mapping of keys to values, not {section!r}")
    return section


def _known(section: str, given: dict, known, path: Path, note: str = "") -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UserError(f"unknown key '{section}.{unknown[0]}' in {path}: known keys of {section}{note} are {', '.join(sorted(known))}")


def augment_keys(option: str) -> list[str]:
    """The keys of a shared augment config (``cifar_shared/conf/augment/<option>.yaml``)."""
    text = resources.files("cifar_shared.conf").joinpath("augment", f"{option}.yaml").read_text()
    return sorted(yaml.safe_load(text) or {})


def overrides_from_file(path: str | Path) -> list[str]:
    """Hydra overrides equivalent to the original's config file (see the module docstring)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"--config {path} is a folder: give the YAML file itself") from None
    except UnicodeDecodeError:
        raise UserError(f"--config {path} is not a text file (not UTF-8): give a YAML config file") from None
    except OSError as e:
        raise UserError(f"--config {path} cannot be read ({e.strerror or type(e).__name__}): check the path and its permissions") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"--config {path} is not valid YAML{where}: fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path} must be a mapping with sections {', '.join(SECTIONS)}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise UserError(f"unknown section '{unknown[0]}' in {path}: known sections are {', '.join(SECTIONS)}")

    out: list[str] = []
    if "device" in data:
        device = data["device"]
        if device not in DEVICES:
            raise UserError(f"device: {device!r} in {path} is invalid: choose one of {', '.join(DEVICES)}")
        out.append(f"trainer.accelerator={device}")

    model = _section(data, "model", path)
    _known("model", model, MODEL_KEYS, path)
    for key, value in model.items():
        _typed(f"model.{key}", value, MODEL_KEYS[key], path)
    if "input_dim" in model:
        check_input_dim(model["input_dim"], model.get("num_freq_bands", _default_bands()))
    out += [f"model.{key}={hydra_value(value)}" for key, value in model.items()]

    training = _section(data, "training", path)
    _known("training", training, TRAINING_KEYS, path)
    scheduler = training.get("scheduler", "cosine")
    for key, value in training.items():
        target, kind = TRAINING_KEYS[key]
        _typed(f"training.{key}", value, kind, path)
        if key == "scheduler" and value not in SCHEDULERS:
            raise UserError(f"training.scheduler: {value!r} in {path} is invalid: choose one of {', '.join(SCHEDULERS)}")
        if key == "optimizer" and value not in OPTIMIZERS:
            raise UserError(f"training.optimizer: {value!r} in {path} is invalid: choose one of {', '.join(OPTIMIZERS)}")
        if key in SCHEDULER_ONLY and SCHEDULER_ONLY[key] != scheduler:
            raise UserError(f"training.{key} in {path} applies to scheduler: {SCHEDULER_ONLY[key]} only (this file uses {scheduler})")
        if key == "mixed_precision":  # mixed where it helps (GPUs); fp32 on the CPU
            value = "auto" if value else "32-true"
        out.append(f"{target}={hydra_value(value)}")

    augmentation = _section(data, "augmentation", path)
    if augmentation:
        kind = augmentation.get("type", "standard")
        if kind not in AUGMENTATIONS:
            raise UserError(f"augmentation.type: {kind!r} in {path} is invalid: choose one of {', '.join(AUGMENTATIONS)}")
        option = AUGMENTATIONS[kind]
        params = {k: v for k, v in augmentation.items() if k != "type"}
        _known("augmentation", params, ["type", *augment_keys(option)], path, f" (type {kind})")
        for key, kind_of in AUGMENTATION_TYPES.items():
            if key in params:
                _typed(f"augmentation.{key}", params[key], kind_of, path)
        out.append(f"augment={option}")
        out += [f"augment.{key}={hydra_value(value)}" for key, value in params.items()]
    return out


def _default_bands() -> int:
    text = resources.files("cifar_perceiver.conf").joinpath("model", "perceiver.yaml").read_text()
    return int(yaml.safe_load(text)["num_freq_bands"])
