"""Entry points: ``basiccnn-train`` and ``basiccnn-visualize``."""

from cifar_shared.engine.cli import run
from cifar_shared.runs.plots import visualize_main


def train_main() -> None:
    run("cifar_basiccnn.conf")


__all__ = ["train_main", "visualize_main"]
