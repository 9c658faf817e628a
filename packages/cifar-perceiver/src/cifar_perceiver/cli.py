"""Entry point ``perceiver-train [--config FILE.yaml] [key=value ...]``.

``--config`` reads a file in the original project's layout (``config_file.py``) and turns it into
Hydra overrides that come before the command line's own. torch and Lightning are imported only once
the config is known good, so a mistake costs a second, not the ~15 s of those imports.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from cifar_perceiver.config_file import check_input_dim
from cifar_shared.engine.cli import _INSPECT as INSPECT
from cifar_shared.engine.cli import fail, run
from cifar_shared.engine.config import accelerator_missing, check_rules
from cifar_shared.errors import UserError


def _positive(key: str, what: str):
    return (f"model.{key}", "int", lambda v: v >= 1, f"an integer >= 1 ({what})")


# perceiver-pytorch's arguments (conf/model/perceiver.yaml), as the shared rule table takes them
MODEL_RULES = [
    _positive("num_freq_bands", "Fourier bands per axis"),
    ("model.max_freq", "number", lambda v: v > 0, "a number > 0"),
    _positive("depth", "cross-attention blocks"),
    _positive("num_latents", "latent vectors"),
    _positive("latent_dim", "width of a latent"),
    _positive("cross_heads", "cross-attention heads"),
    _positive("latent_heads", "self-attention heads"),
    _positive("cross_dim_head", "width of a cross-attention head"),
    _positive("latent_dim_head", "width of a self-attention head"),
    ("model.attn_dropout", "number", lambda v: 0 <= v < 1, "a probability in [0, 1)"),
    ("model.ff_dropout", "number", lambda v: 0 <= v < 1, "a probability in [0, 1)"),
    ("model.weight_tie_layers", "bool", lambda v: True, "true or false"),
    _positive("self_per_cross_attn", "self-attention blocks per cross-attention"),
    ("model.input_dim", "int?", lambda v: v >= 1, "null (derived) or the Fourier width, 37 for 8 bands"),
]


def check_perceiver(cfg: DictConfig) -> None:
    """The model's values (types, ranges), and ``model.input_dim``, when given, must be the width
    the Fourier encoding makes."""
    check_rules(cfg, MODEL_RULES)
    model = cfg.get("model") or {}
    check_input_dim(model.get("input_dim"), model.get("num_freq_bands"))


def train_perceiver(cfg: DictConfig) -> dict:
    from cifar_shared.engine.train import train

    check_perceiver(cfg)
    return train(cfg)


def split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--config FILE`` / ``--config=FILE`` out of argv; the rest stays in order."""
    rest, path, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise UserError("--config needs a file: perceiver-train --config path/to/file.yaml [key=value ...]")
            path, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return path, rest


def check_file_device(path: str, from_file: list[str], command_line: list[str]) -> None:
    """The file's ``device: cuda`` on a machine without CUDA, named as the file says it (the shared
    check would name ``trainer.accelerator``, a key the file's user never wrote). A
    ``trainer.accelerator=`` on the command line wins over the file, so the shared check judges it."""
    if any(arg.lstrip("+").startswith("trainer.accelerator=") or arg.split("=")[0] in INSPECT for arg in command_line):
        return  # the command line chose the device, or only prints (--cfg job)
    device = next((o.split("=", 1)[1] for o in from_file if o.startswith("trainer.accelerator=")), None)
    missing = accelerator_missing(device)
    if missing:
        raise UserError(f"device: {device} in {path} asks for {missing}, but torch finds none on this machine: "
                        "set device: auto (whatever is there) or device: cpu in the file, or add trainer.accelerator=cpu")


def train_main(argv: list[str] | None = None) -> None:
    from cifar_perceiver.config_file import overrides_from_file

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path, argv = split_config_flag(argv)
        if path is not None:
            from_file = overrides_from_file(path)
            check_file_device(path, from_file, argv)
            argv = [*from_file, *argv]  # the command line's overrides win
    except UserError as e:
        fail(str(e))
    run("cifar_perceiver.conf", train_perceiver, argv=argv, check=check_perceiver)
