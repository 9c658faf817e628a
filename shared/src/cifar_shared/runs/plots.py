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


def plot_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> list[Path]:
    """Write loss/accuracy/F1/LR curves and the test confusion matrix as PNGs into ``RUN/plots/``;
    return their paths. With ``checkpoint``, the curves are the history that checkpoint holds (the
    epochs up to it); the confusion matrix is drawn when it is the checkpoint the run tested."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    if checkpoint is None:
        history, source = metrics.get("history", []), f"{run_dir}/metrics.json"
    else:
        history, source = checkpoint_history(Path(checkpoint)), str(checkpoint)
    if not history:
        raise UserError(f"{source} has no finished epoch yet: train at least one epoch first")
    out = run_dir / "plots"
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out} ({e.strerror or type(e).__name__}): the run folder must be writable") from None
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
        path = out / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    test = metrics.get("test") or {}
    cm = test.get("confusion_matrix")
    if cm and (checkpoint is None or test.get("checkpoint") == Path(checkpoint).name):
        path = out / "confusion_matrix.png"
        confusion_figure(cm, metrics.get("classes") or [str(i) for i in range(len(cm))]).savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
    return written


def checkpoint_history(path: Path) -> list[dict]:
    """The per-epoch rows a checkpoint saved (the run recorder's state), read as plain data."""
    from cifar_shared.runs.folder import load_checkpoint

    fix = "pass a .ckpt a training run saved"
    for key, state in (load_checkpoint(path, fix).get("callbacks") or {}).items():
        if str(key) == "RunRecorder" and isinstance(state, dict):
            return list(state.get("history") or [])
    raise UserError(f"{path} holds no training history (not saved by a run of this toolkit): {fix}")


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to: the nearest folder above it with a metrics.json."""
    for folder in checkpoint.resolve().parents:
        if (folder / "metrics.json").is_file():
            return folder
    raise UserError(f"{checkpoint} is not inside a run folder (no metrics.json above it): pass RUN_DIR too")


def confusion_figure(matrix: list[list[float]], classes: list[str]):
    """The confusion matrix (counts, rows = true class) as a matplotlib ``Figure``: colour is the
    row fraction, each cell its count (up to 20 classes, with the class names). A plain Figure,
    no pyplot: drawing it leaves the process's matplotlib backend and figure list alone (the
    TensorBoard logger draws the same figure inside a user's run)."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=float)
    rates = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    n = len(classes)
    size = max(5, min(20, 0.5 * n))
    fig = Figure(figsize=(size, size), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="test confusion matrix (colour: row fraction)")
    return fig


def visualize_main(argv: list[str] | None = None) -> None:
    """``*-visualize RUN_DIR`` or ``*-visualize --checkpoint-file PATH``: figures into ``RUN/plots/``."""
    import argparse

    parser = argparse.ArgumentParser(description="Plot learning curves and the test confusion matrix of a run into RUN/plots/.")
    parser.add_argument("run_dir", nargs="?", help="a training run's output_dir")
    parser.add_argument("--checkpoint-file", help="a checkpoint of the run: the curves up to its epoch (the original project's form)")
    args = parser.parse_args(argv)
    if args.run_dir is None and args.checkpoint_file is None:
        parser.error("give RUN_DIR or --checkpoint-file PATH")
    try:
        checkpoint = Path(args.checkpoint_file) if args.checkpoint_file else None
        if checkpoint is not None and not checkpoint.is_file():
            raise UserError(f"--checkpoint-file {checkpoint} does not exist: pass a .ckpt from RUN/checkpoints/")
        run_dir = Path(args.run_dir) if args.run_dir else run_folder_of(checkpoint)
        for path in plot_run(run_dir, checkpoint):
            print(path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
