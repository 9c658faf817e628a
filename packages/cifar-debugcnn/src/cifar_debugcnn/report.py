"""What the probes say: diagnoses a user can act on, the per-step table and the per-epoch figures."""

from __future__ import annotations

import math
from pathlib import Path


def diagnose(record: dict, thresholds: dict) -> list[str]:
    """One line per problem, each naming the layer (or parameter) and what to try."""
    out = []
    if not math.isfinite(record["loss"]):
        first = next((r["name"] for r in record["layers"] if not all(map(math.isfinite, (r["min"], r["max"])))), None)
        where = f"first non-finite activations at {first}" if first else "activations are finite, so the loss itself overflowed"
        out.append(f"loss is {record['loss']}: {where}; lower the lr, check the input normalization, or clip gradients (trainer.gradient_clip_val=1.0)")
    for r in record["layers"]:
        frac = r.get("dead_fraction")
        if frac is not None and frac > thresholds["dead"]:
            out.append(f"{r['name']}: {r['dead']} of {r['units']} units dead ({frac:.0%} > {thresholds['dead']:.0%}, zero for every sample of the batch); lower the lr, check the bias/init before it, or use LeakyReLU")
        sat = r.get("saturated")
        if sat is not None and sat > thresholds["saturation"]:
            out.append(f"{r['name']}: {sat:.0%} of its outputs saturate ({r['type']} near its bounds, > {thresholds['saturation']:.0%}); its gradient vanishes there: normalize its input or lower the lr")
    for p in record["params"]:
        g = p["grad_norm"]
        if g is None:
            continue
        if not math.isfinite(g):
            out.append(f"{p['name']}: gradient norm is {g}; lower the lr or clip gradients (trainer.gradient_clip_val=1.0)")
        elif g < thresholds["vanishing"]:
            out.append(f"{p['name']}: gradient norm {g:.1e} < {thresholds['vanishing']:.0e} (vanishing): the layer barely learns; add normalization or check what follows it")
        elif g > thresholds["exploding"]:
            out.append(f"{p['name']}: gradient norm {g:.1e} > {thresholds['exploding']:.0e} (exploding): lower the lr or clip gradients (trainer.gradient_clip_val=1.0)")
    return out


def _num(v, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def table(record: dict) -> str:
    """The readable per-step report: batch, then layers, then parameters (training steps only:
    validation has no gradients), then diagnoses. ``dead`` counts units (channels), ``dead elem``
    counts elements (the original's "12345/1605632")."""
    split = " (validation)" if record.get("split") == "val" else ""
    lines = [f"debug probe{split}: epoch {record['epoch']}, step {record['global_step']} (batch {record['batch']}), loss {record['loss']:.4f}"]
    if record["labels"] is not None:
        lines.append("  labels   : " + " ".join(f"{c}:{n}" for c, n in enumerate(record["labels"])))
    if record["predicted"] is not None:
        lines.append("  predicted: " + " ".join(f"{c}:{n}" for c, n in enumerate(record["predicted"])))
    params = record.get("params") or []
    w = max([len(r["name"]) for r in record["layers"] + params] + [5])
    lines.append(f"  {'layer':<{w}} {'type':<11} {'output':<16} {'min':>9} {'max':>9} {'mean':>9} {'std':>9} {'dead':>11} {'dead elem':>15} {'grad(out)':>9}")
    for r in record["layers"]:
        dead = f"{r['dead']}/{r['units']}" if "dead" in r else (f"sat {r['saturated']:.0%}" if "saturated" in r else "-")
        elements = f"{r['dead_elements']}/{r['elements']}" if "dead_elements" in r else "-"
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"  {r['name']:<{w}} {r['type'][:11]:<11} {shape:<16} {_num(r['min']):>9} {_num(r['max']):>9} "
                     f"{_num(r['mean']):>9} {_num(r['std']):>9} {dead:>11} {elements:>15} {_num(r.get('out_grad_norm'), '.2e'):>9}")
    if params:
        lines.append(f"  {'parameter':<{w}} {'shape':<16} {'norm':>9} {'grad norm':>9} {'update/w':>9}")
    for p in params:
        shape = "x".join(map(str, p["shape"]))
        lines.append(f"  {p['name']:<{w}} {shape:<16} {_num(p['weight_norm']):>9} {_num(p['grad_norm'], '.2e'):>9} {_num(p['update_ratio'], '.2e'):>9}")
    lines += [f"  ! {d}" for d in record["diagnoses"]] or ["  no problem found"]
    return "\n".join(lines)


def figures(steps: list[dict], epoch: int, folder: Path) -> list[Path]:
    """``grad_flow_epochNNN.png`` (gradient norm per parameter tensor, input to output, for this
    epoch's watched steps) and ``dead_units.png`` (dead fraction per ReLU layer over the epochs)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    this = [s for s in steps if s["epoch"] == epoch]
    names = [p["name"] for p in this[-1]["params"] if p["grad_norm"] is not None and len(p["shape"]) > 1]
    if names:
        fig = Figure(figsize=(max(6, 0.5 * len(names)), 4), dpi=90)
        ax = fig.add_subplot()
        for s in this:
            norms = {p["name"]: p["grad_norm"] for p in s["params"]}
            ax.plot(range(len(names)), [max(norms.get(n) or 0, 1e-12) for n in names], marker="o", alpha=0.7, label=f"step {s['global_step']}")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("gradient norm (weights)")
        ax.set_title(f"gradient flow, epoch {epoch} (input -> output)")
        if len(this) <= 8:
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, FigureCanvasAgg, folder / f"grad_flow_epoch{epoch:03d}.png"))
    per_epoch: dict[int, dict[str, float]] = {}
    for s in steps:  # the last watched step of each epoch stands for it
        per_epoch[s["epoch"]] = {r["name"]: r["dead_fraction"] for r in s["layers"] if "dead_fraction" in r}
    layers = list(next(iter(per_epoch.values()), {}))
    if layers:
        fig = Figure(figsize=(6, 4), dpi=90)
        ax = fig.add_subplot()
        epochs = sorted(per_epoch)
        for name in layers:
            ax.plot(epochs, [per_epoch[e].get(name, math.nan) for e in epochs], marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("dead-unit fraction")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("dead ReLU units per layer")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, FigureCanvasAgg, folder / "dead_units.png"))
    return written


def _save(fig, canvas_cls, path: Path) -> Path:
    canvas_cls(fig)
    tmp = path.with_name(path.stem + ".tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    finally:  # an error or Ctrl-C mid-write leaves no partial figure (a kill's is removed at the next start)
        tmp.unlink(missing_ok=True)
    return path
