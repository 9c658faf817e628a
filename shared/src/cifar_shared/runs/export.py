"""``cifar-export-model RUN_DIR --format onnx|torchscript``: a deployable network, checked.

The exported file is loaded back (ONNX Runtime for onnx, ``torch.jit.load`` for torchscript) and
its logits on the run's own test images are compared with PyTorch's; only within ``TOLERANCE``
does the command report success (otherwise the file is removed and the command fails). A JSON
beside the model records the preprocessing (mean, std, image shape) and the class names.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from cifar_shared.errors import UserError
from cifar_shared.runs.folder import (
    Parser,
    RunFolder,
    apply_overrides,
    main_guard,
    output_path,
    write_text,
)

TOLERANCE = 1e-4
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
# The form that survives the uv workspace's next `uv run`; pip users: pip install 'cifar-shared[export]'.
ONNX_INSTALL = "uv sync --all-packages --extra export (or pip install 'cifar-shared[export]')"
# Packages whose networks have their own export (the generic tracers do not handle them).
OWN_EXPORT = {"qvit": "qvit-export RUN_DIR (packed integer weights, safetensors)"}


class ExportMismatch(Exception):
    """The exported model computes something else than the PyTorch one: a bug, not a user error."""


def sidecar(model: Path) -> Path:
    """model.onnx -> model.onnx.json: preprocessing and classes for whoever deploys it."""
    return model.with_name(model.name + ".json")


def check_images(run: RunFolder, overrides: list[str], count: int):
    """The first ``count`` images of the run's test data (or of the data ``overrides`` select)."""
    from cifar_shared.runs.evaluate import eval_set

    cfg = apply_overrides(run.cfg, overrides)
    try:
        data = eval_set(cfg.data)
    except UserError as e:
        raise UserError(f"the check needs the run's test images, which failed to load ({e}); point to them with data.root=PATH") from None
    return data.images[:count]


def export_model(run_dir: str | Path, fmt: str, out: str | Path | None = None, checkpoint: str = "best",
                 overrides: list[str] | None = None, count: int = 64) -> dict:
    import torch

    from cifar_shared.runs.evaluate import batches

    if fmt not in SUFFIX:
        raise UserError(f"--format {fmt} is invalid: choose onnx or torchscript")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as e:
            raise UserError(f"--format onnx needs onnx, onnxscript and onnxruntime ({e.name} is missing): {ONNX_INSTALL}") from None
    run = RunFolder.open(run_dir)
    if run.package in OWN_EXPORT:  # torch.jit.trace fails deep inside its quantizers, after pages of warnings
        raise UserError(f"cifar-export-model does not export {run.package} networks (the tracers cannot follow its fake "
                        f"quantizers): use {OWN_EXPORT[run.package]}")
    out = Path(out).expanduser() if out else run.path / "export" / f"model{SUFFIX[fmt]}"
    output_path(out, "--out", f"model{SUFFIX[fmt]}", (run.path,))
    output_path(sidecar(out), "--out", f"model{SUFFIX[fmt]}", (run.path,))  # model -> model.json: not metrics(.json)
    chosen = run.select_checkpoint(checkpoint)
    ckpt = chosen.path
    classes = run.classes()
    mean, std, shape = run.input_spec()
    images = check_images(run, overrides or [], count)
    if tuple(images.shape[1:]) != tuple(shape):
        raise UserError(f"the check images are {tuple(images.shape[1:])}, the run trained on {tuple(shape)}: set data.image_size={shape[-1]}")
    net = run.build_module(ckpt, len(classes) if classes else None).net.eval()
    x = next(iter(batches(images, mean, std, len(images))))[0]
    with torch.no_grad():
        expected = net(x).float()

    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # the tracers' notes (TracerWarning, ...): the check below is what counts
            warnings.simplefilter("ignore")
            got = _export(net, x, fmt, tmp)
    except (UserError, KeyboardInterrupt):
        tmp.unlink(missing_ok=True)
        raise
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {tmp} ({e.strerror or type(e).__name__}): give --out a writable path") from None
    except Exception as e:  # the tracer/exporter meets something it cannot express
        tmp.unlink(missing_ok=True)
        own = OWN_EXPORT.get(run.package)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(f"the {run.package} network cannot be exported to {fmt} ({type(e).__name__}: {first}): "
                        + (f"use {own}" if own else "try the other --format")) from None
    diff = float((got - expected).abs().max())
    if not diff <= TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ExportMismatch(f"the {fmt} model's logits differ from PyTorch's by {diff:.3g} (> {TOLERANCE}) on "
                             f"{len(x)} test images: nothing written")
    tmp.replace(out)
    info = {"run": str(run.path), "package": run.package, "checkpoint": chosen.record(), "format": fmt, "file": str(out.resolve()),
            "input": {"name": "images", "shape": ["batch", *shape], "dtype": "float32",
                      "preprocess": "x = (uint8_rgb / 255 - mean) / std", "mean": mean, "std": std},
            "output": {"name": "logits", "classes": classes},
            "check": {"images": len(x), "max_abs_diff": diff, "tolerance": TOLERANCE}}
    write_text(sidecar(out), json.dumps(info, indent=2))
    return info


def _export(net, x, fmt: str, tmp: Path):
    """Write ``net`` in ``fmt`` to ``tmp``, load it back, return its logits on ``x``."""
    import torch

    if fmt == "torchscript":  # deprecated by torch in favour of torch.export (said in --help); its warning is silenced above
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(net, x[:2]), str(tmp))
            return torch.jit.load(str(tmp), map_location="cpu")(x).float().detach()
    import onnxruntime as ort

    with torch.no_grad():
        program = torch.onnx.export(net, (x[:2],), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    program.save(str(tmp))
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0]).float()


def export_main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="cifar-export-model", description="Export a run's network to ONNX or TorchScript, checked against PyTorch on the run's test images.")
    parser.add_argument("run_dir", help="a training run's output_dir")
    parser.add_argument("overrides", nargs="*", help="where the check images are, if the run's data moved: e.g. data.root=PATH")
    parser.add_argument("--format", required=True, choices=sorted(SUFFIX), help="onnx (needs the export extra: uv sync --all-packages --extra export) or torchscript "
                        "(deprecated by PyTorch in favour of torch.export, still loads with torch.jit.load)")
    parser.add_argument("--out", help="output file (default RUN_DIR/export/model.onnx or model.pt)")
    parser.add_argument("--checkpoint", default="best", help="best (default; last.ckpt when there is none), last, or a .ckpt path")
    parser.add_argument("--check-images", type=int, default=64, help="test images the outputs are compared on (default 64)")
    args = parser.parse_args(argv)

    def go():
        try:
            info = export_model(args.run_dir, args.format, args.out, args.checkpoint, args.overrides, args.check_images)
        except ExportMismatch as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        c = info["check"]
        print(f"{info['file']}: {args.format}, logits within {c['max_abs_diff']:.2g} of PyTorch's on {c['images']} test images "
              f"(tolerance {c['tolerance']:g}); preprocessing and classes in {sidecar(Path(info['file']))}")

    main_guard(go)
