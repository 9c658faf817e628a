"""``qvit-export RUN_DIR``: quantized weights as packed integer codes + per-channel steps.

The file (safetensors) holds, for every layer with a weight quantizer, ``<layer>.weight_codes``
(uint8, the b-bit unsigned codes ``code - Q_n`` bit-packed) and ``<layer>.weight.step``; every
other tensor of the network (biases, norms, embeddings, activation steps/offsets, IRM) as float32.
The metadata holds the model config and each layer's bit width and weight shape, so
``load_export`` rebuilds the fake-quant network exactly: its weights become ``code * step``,
which the LSQ quantizer maps back to the same codes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from cifar_qvit.model import QViT
from cifar_qvit.quant import QuantConv2d, QuantLinear
from cifar_shared.errors import UserError

log = logging.getLogger("cifar_qvit.export")


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integer codes < 2^bits -> a uint8 bit stream (bits per code, LSB first)."""
    u = codes.reshape(-1).numpy().astype(np.uint16)
    planes = ((u[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    planes = np.unpackbits(packed.numpy(), bitorder="little")[: count * bits].reshape(count, bits).astype(np.int64)
    return torch.from_numpy((planes << np.arange(bits)).sum(1))


def quantized_layers(net: QViT) -> dict[str, QuantLinear | QuantConv2d]:
    return {name: m for name, m in net.named_modules() if isinstance(m, QuantLinear | QuantConv2d) and m.wq is not None}


def export_net(net: QViT, model_cfg: dict, num_classes: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    layers = quantized_layers(net)
    tensors, info = {}, {}
    skip = {f"{name}.weight" for name in layers}
    for key, value in net.state_dict().items():
        if key not in skip:
            tensors[key] = value.detach().float().contiguous() if value.is_floating_point() else value.detach().contiguous()
    for name, layer in layers.items():
        codes = layer.wq.codes(layer.weight) - layer.wq.qn
        tensors[f"{name}.weight_codes"] = pack_codes(codes.cpu(), layer.wq.bits)
        info[name] = {"bits": layer.wq.bits, "shape": list(layer.weight.shape)}
    meta = {"model": json.dumps(model_cfg), "num_classes": str(num_classes), "layers": json.dumps(info)}
    return tensors, meta


def build_net(model_cfg: dict, num_classes: int) -> QViT:
    """The run's network without loading pretrained weights (they come from the run or the export)."""
    kwargs = {k: v for k, v in model_cfg.items() if not k.startswith("_") and k != "num_classes"}
    kwargs.update(init_from=None, load_weights=False, gradient_checkpointing=False)
    logging.getLogger("cifar_qvit.model").disabled = True  # the training log already names the layers
    try:
        return QViT(num_classes=num_classes, **kwargs)
    finally:
        logging.getLogger("cifar_qvit.model").disabled = False


def load_run(run_dir: str | Path) -> tuple[QViT, dict]:
    """The fake-quant network of a finished run (its best checkpoint, read by the shared run-folder
    reader) and the run's config."""
    from cifar_shared.runs.folder import RunFolder

    if not (Path(run_dir) / "config.yaml").exists():
        raise UserError(f"{Path(run_dir) / 'config.yaml'} does not exist: give a qvit-train run folder")
    run = RunFolder.open(run_dir)
    cfg = OmegaConf.to_container(run.cfg, resolve=True)
    path = run.checkpoint("best")
    state = run.net_state(path, "export another run")
    head = state.get("hf.classifier.weight")
    if cfg.get("model", {}).get("_target_") != "cifar_qvit.model.QViT" or head is None:
        raise UserError(f"{run.path} is not a qvit-train run (model {cfg.get('model', {}).get('_target_')}): give a qvit-train run folder")
    net = build_net(cfg["model"], int(head.shape[0]))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} does not fit this cifar-qvit's model (e.g. {(missing or unexpected)[0]}): "
                        "it was saved by another version of the package; export it with that version, or retrain")
    return net.eval(), cfg


def load_export(path: str | Path) -> QViT:
    """The fake-quant network back from an export file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    net = build_net(json.loads(meta["model"]), int(meta["num_classes"]))
    layers = quantized_layers(net)
    for name, info in json.loads(meta["layers"]).items():
        wq = layers[name].wq
        codes = unpack_codes(tensors.pop(f"{name}.weight_codes"), info["bits"], int(np.prod(info["shape"]))) + wq.qn
        step = tensors[f"{name}.wq.step"].view(-1, *([1] * (len(info["shape"]) - 1)))
        tensors[f"{name}.weight"] = codes.reshape(info["shape"]).float() * step
    net.load_state_dict(tensors)
    return net.eval()


def sizes(net: QViT, path: Path) -> tuple[int, int]:
    """(bytes of the network's FP32 weights without quantizer parameters, bytes of the export file)."""
    fp = sum(p.numel() * 4 for n, p in net.named_parameters() if not any(part in ("wq", "aq", "qvit") for part in n.split(".")))
    return fp, path.stat().st_size


@torch.no_grad()
def predictions(net: QViT, loader) -> torch.Tensor:
    return torch.cat([net(x).argmax(1) for x, _ in loader])


def export_run(run_dir: str | Path, out: str | Path | None = None, check: bool = False) -> Path:
    from safetensors.torch import save

    from cifar_shared.engine.atomic import atomic_write
    from cifar_shared.runs.folder import output_path

    out = output_path(out, "--out", "model.safetensors", (Path(run_dir),)) if out else Path(run_dir) / "export" / "model.safetensors"
    net, cfg = load_run(run_dir)
    if not quantized_layers(net):
        raise UserError(f"{run_dir} trained in full precision (model.nbits_w={cfg['model'].get('nbits_w')}): export a quantized run")
    tensors, meta = export_net(net, cfg["model"], int(net.hf.config.num_labels))
    atomic_write(out, save(tensors, metadata=meta))  # a plain file (mode as the umask says), whole or not at all
    fp, packed = sizes(net, out)
    print(f"{out}: {len(quantized_layers(net))} quantized layers; FP32 weights {fp / 1e6:.3f} MB -> export {packed / 1e6:.3f} MB ({fp / packed:.1f}x smaller)")
    if check:
        from cifar_shared.data.datamodule import ImageDataModule

        dm = ImageDataModule(cfg["data"], cfg.get("augment"), cfg["batch_size"], cfg["seed"])
        loader = dm.test_dataloader()
        same = (predictions(net, loader) == predictions(load_export(out), loader))
        print(f"test split: {int(same.sum())}/{len(same)} predictions of the reloaded export equal the fake-quant model's")
        if not bool(same.all()):
            raise SystemExit(1)
    return out
