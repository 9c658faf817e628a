"""Entry points ``qvit-train`` and ``qvit-export``.

torch and transformers are imported inside the functions, so a mistyped key fails in a second.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig

from cifar_shared.engine.cli import fail, run
from cifar_shared.engine.config import check_config
from cifar_shared.errors import UserError

# Closed sets of values, checked before anything heavy is imported (a test keeps them in step).
CHOICES = {"model.size": ("tiny", "small", "base", "large")}
_CLASSES = {"cifar10": 10, "cifar100": 100}


def looks_like_path(value: str) -> bool:
    """A hub id is ``name`` or ``org/name``; a leading /, ., ~ or drive letter, or two slashes, is a path."""
    return bool(re.match(r"^(/|\.|~|[A-Za-z]:[\\/])", value)) or value.count("/") >= 2 or "\\" in value


def check_pretrained(pretrained) -> None:
    """A path that is not a save_pretrained folder is one line now, not a hub download attempt later."""
    if pretrained is None:
        return
    path = Path(os.path.expanduser(str(pretrained)))
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model.pretrained={pretrained} has no config.json: give a folder written by save_pretrained, "
                            "a hub id (e.g. google/vit-large-patch16-224) or null (random init of model.size)")
    elif looks_like_path(str(pretrained)):
        raise UserError(f"model.pretrained={pretrained} does not exist: give a folder written by save_pretrained, "
                        "a hub id (e.g. google/vit-large-patch16-224) or null (random init of model.size)")


def check_qvit(cfg: DictConfig) -> None:
    """The package's own rules, run by the shared ``run()`` on every composed config (each job of a
    ``-m`` sweep) before torch or transformers is imported."""
    check_config(cfg, CHOICES)
    m = cfg.model
    check_pretrained(m.get("pretrained"))
    for key in ("nbits_w", "nbits_a"):
        bits = m.get(key)
        if not (isinstance(bits, int) and not isinstance(bits, bool) and (bits in (-1, 32) or 2 <= bits <= 8)):
            raise UserError(f"model.{key}={bits!r} is invalid: it must be 2..8 bits, or -1/32 for full precision")
    for name, bits in (m.get("layer_bits") or {}).items():
        for k, v in bits.items():
            if k not in ("w", "a") or not (isinstance(v, int) and (v in (-1, 32) or 2 <= v <= 8)):
                raise UserError(f"model.layer_bits.{name}.{k}={v!r} is invalid: use {{w: BITS, a: BITS}} with 2..8, -1 or 32")
    expected = cfg.data.get("num_classes") if cfg.data.name == "synthetic" else _CLASSES.get(cfg.data.name)
    if m.get("num_classes") is not None and expected is not None and m.num_classes != expected:
        raise UserError(f"model.num_classes={m.num_classes} but data={cfg.data.name} has {expected} classes: the head follows the data, "
                        f"pick the data instead ({_data_hint(m.num_classes)}) or drop model.num_classes")


def _data_hint(num_classes) -> str:
    names = [f"data={name}" for name, n in _CLASSES.items() if n == num_classes]
    return names[0] if names else "e.g. data=folder data.root=DIR"


def train_qvit(cfg: DictConfig) -> dict:
    """The shared ``train``; a UserError raised while Hydra instantiates the model or the loss
    hook (no weights offline, a bad init_from/teacher run) arrives wrapped: unwrap it."""
    from hydra.errors import InstantiationException

    from cifar_shared.engine.train import train

    check_qvit(cfg)
    try:
        return train(cfg)
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise


def train_main() -> None:
    # the original's keys (training.batch_size, logger.project) are mapped by conf/original_keys.yaml
    run("cifar_qvit.conf", train_qvit, choices=CHOICES, check=check_qvit)


def export_main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="qvit-export", description="Write a quantized run's weights as packed integer codes (safetensors).")
    parser.add_argument("run_dir", help="a finished qvit-train run folder")
    parser.add_argument("--out", help="the .safetensors file (default: RUN_DIR/export/model.safetensors)")
    parser.add_argument("--check", action="store_true", help="reload the export and compare its test-split predictions with the fake-quant model's")
    args = parser.parse_args(argv)
    try:
        from cifar_qvit.export import export_run

        export_run(args.run_dir, args.out, check=args.check)
    except UserError as e:
        fail(str(e))
