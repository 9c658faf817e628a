"""Entry point ``resnet-train``: the shared ``train`` plus a ``model_info.txt`` in the run folder.

torch, torchvision and Lightning are imported inside the functions: importing them takes ~15 s
on a small CPU machine, and a mistyped key should fail in a second, not after that.
"""

from pathlib import Path

from omegaconf import DictConfig

from cifar_shared.engine.cli import run
from cifar_shared.errors import UserError

SUMMARY_INPUT = (1, 3, 32, 32)


def check_model(cfg: DictConfig) -> None:
    """Name a bad arch/stem in one line before anything runs (instantiate would wrap it in a traceback)."""
    from cifar_resnet.model import ARCHS, STEMS

    arch, stem = cfg.model.get("arch"), cfg.model.get("stem")
    if arch not in ARCHS:
        raise UserError(f"model.arch={arch!r} is invalid: choose one of {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise UserError(f"model.stem={stem!r} is invalid: choose one of {', '.join(STEMS)}")


def write_model_info(cfg: DictConfig, path: Path) -> str:
    """torchinfo summary of the run's network at a CIFAR-sized input; returns the text written."""
    from hydra.utils import instantiate
    from torchinfo import summary

    from cifar_shared.data.sources import load_source

    num_classes = load_source(cfg.data)[0].num_classes  # the class count train() will see
    net = instantiate(cfg.model, num_classes=num_classes)
    stats = summary(net, input_size=SUMMARY_INPUT, device="cpu", mode="eval", verbose=0, depth=3,
                    col_names=("input_size", "output_size", "num_params"))
    text = f"{cfg.model.arch}, stem={cfg.model.stem}, {num_classes} classes\n{stats}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def train_resnet(cfg: DictConfig) -> dict:
    """Write ``model_info.txt`` first (so a long run shows its network from the start), then train."""
    from cifar_shared.engine.train import train

    check_model(cfg)
    write_model_info(cfg, Path(cfg.output_dir) / "model_info.txt")
    return train(cfg)


def train_main() -> None:
    run("cifar_resnet.conf", train_resnet)
