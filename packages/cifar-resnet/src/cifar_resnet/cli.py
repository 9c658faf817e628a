"""Entry point ``resnet-train``: the shared ``train``, with this package's model names checked up front.

torch, torchvision and Lightning are imported inside the functions: importing them takes ~15 s
on a small CPU machine, and a mistyped key or name should fail in a second, not after that.
"""

from omegaconf import DictConfig

from cifar_shared.engine.cli import run
from cifar_shared.engine.config import check_config

# The names model.py accepts (a test keeps the two in step), without importing torch to learn them.
MODEL_CHOICES = {"model.arch": ("resnet18", "resnet34", "resnet50"), "model.stem": ("cifar", "imagenet")}


def train_resnet(cfg: DictConfig) -> dict:
    """The shared ``train`` (which writes ``model_info.txt``), after naming a bad arch/stem in one line."""
    from cifar_shared.engine.train import train

    check_config(cfg, MODEL_CHOICES)
    return train(cfg)


def train_main() -> None:
    run("cifar_resnet.conf", train_resnet, choices=MODEL_CHOICES)
