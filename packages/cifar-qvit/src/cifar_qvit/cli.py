"""Entry points ``qvit-train`` and ``qvit-export``.

torch and transformers are imported inside the functions, so a mistyped key fails in a second.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from cifar_shared.engine.cli import fail, run
from cifar_shared.engine.config import check_config
from cifar_shared.errors import UserError

# Closed sets of values, checked before anything heavy is imported (a test keeps them in step).
CHOICES = {"model.size": ("tiny", "small", "base", "large")}
# The original project's keys that moved: logger.project was its W&B project.
RENAMED = {"logger.project": "logger.wandb.project"}
_CLASSES = {"cifar10": 10, "cifar100": 100}


def check_qvit(cfg: DictConfig) -> None:
    check_config(cfg, CHOICES)
    m = cfg.model
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
                        f"pick the data instead (e.g. data=cifar100) or drop model.num_classes")


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


def translate(argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        out.append(f"{RENAMED[key]}={value}" if eq and key in RENAMED else arg)
    return out


def train_main() -> None:
    sys.argv = [sys.argv[0], *translate(sys.argv[1:])]
    run("cifar_qvit.conf", train_qvit, choices=CHOICES)


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
