"""Entry point ``resnet-train``: the shared ``train`` with a check of the model's names.

torch, torchvision and Lightning are imported inside the functions: importing them takes ~15 s
on a small CPU machine, and a mistyped key should fail in a second, not after that.
"""

from omegaconf import DictConfig

from cifar_shared.engine.cli import run
from cifar_shared.errors import UserError


def check_model(cfg: DictConfig) -> None:
    """Name a bad arch/stem in one line before anything runs (instantiate would wrap it in a traceback)."""
    from cifar_resnet.model import ARCHS, STEMS

    arch, stem = cfg.model.get("arch"), cfg.model.get("stem")
    if arch not in ARCHS:
        raise UserError(f"model.arch={arch!r} is invalid: choose one of {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise UserError(f"model.stem={stem!r} is invalid: choose one of {', '.join(STEMS)}")


def train_resnet(cfg: DictConfig) -> dict:
    """The shared ``train`` (which writes ``model_info.txt``), after naming a bad arch/stem in one line."""
    from cifar_shared.engine.train import train

    check_model(cfg)
    return train(cfg)


def train_main() -> None:
    run("cifar_resnet.conf", train_resnet)
