"""Figures from a run folder: learning curves and the test confusion matrix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cifar_shared.errors import UserError


def load_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: pass the output_dir of a training run") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}): the run folder is damaged") from None


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write loss/accuracy/F1/LR curves and the confusion matrix as PNGs; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    history = metrics.get("history", [])
    if not history:
        raise UserError(f"{run_dir}/metrics.json has no finished epoch yet: train at least one epoch first")
    epochs = [row["epoch"] for row in history]
    written = []
    for name, keys, ylabel in (
        ("loss", ["train/loss", "val/loss"], "cross-entropy"),
        ("accuracy", ["train/acc", "val/acc"], "top-1 accuracy"),
        ("f1", ["train/f1_macro", "val/f1_macro"], "macro F1"),
        ("lr", ["lr"], "learning rate"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ys = [row.get(key) for row in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, [float("nan") if y is None else y for y in ys], marker="o", ms=3, label=key)
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{ylabel} per epoch")
        if name == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        path = run_dir / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    cm = (metrics.get("test") or {}).get("confusion_matrix")
    if cm:
        written.append(_plot_confusion(plt, cm, metrics.get("classes") or [str(i) for i in range(len(cm))], run_dir / "confusion_matrix.png"))
    return written


def _plot_confusion(plt, cm: list[list[float]], classes: list[str], path: Path) -> Path:
    import numpy as np

    counts = np.asarray(cm, dtype=float)
    rates = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    n = len(classes)
    size = max(5, min(20, 0.5 * n))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="test confusion matrix (colour: row fraction)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def visualize_main(argv: list[str] | None = None) -> None:
    """``*-visualize RUN_DIR``: write the figures next to the run's metrics.json."""
    import argparse

    parser = argparse.ArgumentParser(description="Plot learning curves and the confusion matrix of a run folder.")
    parser.add_argument("run_dir", help="a training run's output_dir")
    args = parser.parse_args(argv)
    try:
        for path in plot_run(args.run_dir):
            print(path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
