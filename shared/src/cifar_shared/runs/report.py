"""``cifar-report RUN_DIR...``: one markdown table over runs (and sweep folders), one figure.

A sweep folder (``-m`` writes ``output_dir/0``, ``/1``, ...) counts as its runs. Each row reads the
run folder only: config.yaml (package, data, epochs), metrics.json (test metrics, history),
model_info.txt (parameters; FLOPs where the summary records them) and train.log (wall time).
Runs whose configs differ only in the seed (a ``-m seed=0,1,2`` sweep) also get a mean ± sd row.
"""

from __future__ import annotations

import re
import statistics
from datetime import datetime
from pathlib import Path

from cifar_shared.errors import UserError
from cifar_shared.runs.folder import Parser, RunFolder, main_guard, output_path, write_text

COLUMNS = ("run", "package", "data", "epochs", "test acc", "macro F1", "parameters", "FLOPs", "wall time")


def run_folders(paths: list[str]) -> list[Path]:
    """Run folders (holding config.yaml) as given, or the run folders inside a sweep folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            found.append(p)
            continue
        if not p.is_dir():
            raise UserError(f"{p} does not exist: pass run folders or sweep folders (holding 0/, 1/, ...)")
        inner = sorted((d for d in p.iterdir() if (d / "config.yaml").is_file()), key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
        if not inner:
            raise UserError(f"{p} holds no run folder (no config.yaml in it or its subfolders): pass a training run's output_dir")
        found += inner
    return found


def model_stats(run_dir: Path) -> tuple[str, str]:
    """(parameters, FLOPs) as model_info.txt states them, '-' where it does not."""
    path = run_dir / "model_info.txt"
    if not path.is_file():
        return "-", "-"
    text = path.read_text()
    params = re.search(r"^Total params:\s*([\d,]+)", text, flags=re.M)
    flops = re.search(r"FLOPs per image: forward ([\d.,]+ ?[kKMGTP]?)", text)  # model_stats' line
    return (params.group(1) if params else "-"), (flops.group(1).strip() if flops else "-")


def wall_time(run_dir: Path, history: list[dict]) -> float | None:
    """Seconds from train.log's first line to its last; the epochs' own times without a log."""
    stamps = []
    log = run_dir / "train.log"
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"))
            except ValueError:
                continue
    if len(stamps) >= 2:
        return (stamps[-1] - stamps[0]).total_seconds()
    times = [row.get("time_s") for row in history if row.get("time_s") is not None]
    return sum(times) if times else None


def sweep_key(cfg) -> str:
    """Runs whose configs differ only in seeds and in paths inside their own folder are repeats:
    they share a mean ± sd row."""
    from omegaconf import OmegaConf

    own = str(cfg.get("output_dir", "\0"))

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in sorted(node.items())
                    if k not in ("seed", "split_seed") and not (isinstance(v, str) and v.startswith(own))}
        return [strip(v) for v in node] if isinstance(node, list) else node

    return repr(strip(OmegaConf.to_container(cfg, resolve=False)))


def describe(run_dir: Path) -> dict:
    run = RunFolder.open(run_dir)
    cfg, metrics = run.cfg, run.metrics
    history, test = metrics.get("history", []), metrics.get("test") or {}
    data = cfg.get("data") or {}
    root = data.get("root")
    params, flops = model_stats(run_dir)
    return {
        "path": run_dir,
        "package": run.package,
        "same_as": sweep_key(cfg),
        "data": f"{data.get('name', '?')}" + (f" ({Path(str(root)).name})" if root and data.get("name") != "synthetic" else ""),
        "epochs": f"{len(history)}/{cfg.get('epochs', '?')}",
        "acc": test.get("acc"),
        "f1": test.get("f1_macro"),
        "parameters": params,
        "flops": flops,
        "wall": wall_time(run_dir, history),
        "history": history,
    }


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append(f"| {r['path']} | {r['package']} | {r['data']} | {r['epochs']} | {_num(r['acc'])} | {_num(r['f1'])} | "
                     f"{r['parameters']} | {r['flops']} | {_time(r['wall'])} |")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["same_as"], []).append(r)
    for members in groups.values():
        package, data, epochs = members[0]["package"], members[0]["data"], members[0]["epochs"]
        accs = [m["acc"] for m in members if m["acc"] is not None]
        f1s = [m["f1"] for m in members if m["f1"] is not None]
        if len(accs) < 2:
            continue
        first = next(m["path"] for m in members if m["acc"] is not None)  # which group: the sweeps' rows may interleave
        lines.append(f"| mean ± sd of {len(accs)} like {first} | {package} | {data} | {epochs} | {_mean_sd(accs)} | {_mean_sd(f1s)} | | | |")
    return "\n".join(lines) + "\n"


def _mean_sd(values: list[float]) -> str:
    """A spread needs two values: runs from before macro-F1 was recorded leave fewer (then "-")."""
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) >= 2 else "-"


def plot_curves(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        points = [(row["epoch"], row["val/acc"]) for row in r["history"] if row.get("val/acc") is not None]
        if points:
            ax.plot(*zip(*points), marker="o", ms=3, label=f"{r['path']} ({r['package']})")
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def report(paths: list[str], out: str | Path) -> tuple[str, Path, Path]:
    folders = run_folders(paths)
    out = output_path(out, "--out", "report.md", tuple(folders))
    figure = output_path(out.with_suffix(".png"), "--out", "report.md", tuple(folders))
    rows = [describe(p) for p in folders]
    text = table(rows)
    write_text(out, text)
    try:
        return text, out, plot_curves(rows, figure)
    except OSError as e:
        raise UserError(f"cannot write {figure} ({e.strerror or type(e).__name__}): give --out a writable path") from None


def report_main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="cifar-report", description="Markdown table and validation-curve figure over run folders and sweep folders.")
    parser.add_argument("runs", nargs="+", help="run folders, or sweep folders holding 0/, 1/, ...")
    parser.add_argument("--out", default="cifar-report.md", help="markdown file (default cifar-report.md); the figure goes beside it as .png")
    args = parser.parse_args(argv)

    def go():
        text, md, png = report(args.runs, args.out)
        print(text, end="")
        print(f"\n{md}\n{png}")

    main_guard(go)
