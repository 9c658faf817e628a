"""``LayerProbes``: a Lightning callback that watches some training steps layer by layer.

On a watched step it attaches a forward hook to every leaf layer of the network (output shape,
min/max/mean/std, dead units, saturation; plus a tensor hook for the gradient reaching that output),
reads each parameter's gradient norm after backward, snapshots the weights before the optimizer
step to get the update-to-weight ratio, and detaches everything once the step ends. Unwatched
steps run with no hook at all, so they cost nothing extra. The first batch of every validation
run is watched the same way (activations only: validation has no backward), as the original
project printed its layer statistics in the validation step too; test runs are never watched.

Enabled through the shared seam ``callbacks.extra.probes`` (see conf/train.yaml); results go to the
console and ``train.log`` (a table per watched step), TensorBoard, ``debug.json`` and ``debug/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn

from cifar_debugcnn import report
from cifar_debugcnn.stats import grad_norms, layer_entry, layer_row, leaf_layers, update_ratios

log = logging.getLogger("cifar_debugcnn.probes")


class LayerProbes(pl.Callback):
    """Watch the first batch of every epoch (``every_n_steps=0``) or every N-th global step."""

    def __init__(self, every_n_steps: int = 0, dead_threshold: float = 0.5, vanishing_grad: float = 1e-6,
                 exploding_grad: float = 100.0, saturation_threshold: float = 0.5, histograms: bool = True,
                 histogram_values: int = 4096, figures: bool = True, table: bool = True):
        if every_n_steps < 0:
            raise ValueError("every_n_steps must be >= 0 (0: the first batch of every epoch)")
        self.every_n_steps = every_n_steps
        self.thresholds = {"dead": dead_threshold, "vanishing": vanishing_grad, "exploding": exploding_grad,
                           "saturation": saturation_threshold}
        self.histograms, self.histogram_values = histograms, histogram_values
        self.figures, self.table = figures, table
        self.enabled = True  # the benchmark flips this to time the same run with and without probes
        self.steps: list[dict] = []  # one record per watched step, all of them go to debug.json
        self.val: list[dict] = []  # one record per validation run (its first batch), debug.json's "val"
        self._handles: list = []
        self._current: dict | None = None

    # ------------------------------------------------------------------ when
    def watches(self, batch_idx: int, global_step: int) -> bool:
        if not self.enabled:
            return False
        return batch_idx == 0 if self.every_n_steps == 0 else global_step % self.every_n_steps == 0

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer, pl_module):
        """A resumed run (loops restored by now) keeps the watched steps it trained before the
        checkpoint, those of a half-trained epoch included (a mid-epoch resume does not rerun its
        first batch); steps after the checkpoint are trained again and recorded again. A figure
        whose write a kill cut short is removed."""
        out = self._out(trainer)
        for stale in (out / "debug").glob("*.tmp.png"):
            stale.unlink(missing_ok=True)
        path = out / "debug.json"
        if path.exists() and trainer.global_step > 0:
            try:
                old = json.loads(path.read_text())
                self.steps = [s for s in old.get("steps", []) if s["global_step"] < trainer.global_step]
                # a validation run at the checkpoint's step came before it (checkpoints are saved at the epoch end)
                self.val = [v for v in old.get("val", []) if v["global_step"] <= trainer.global_step]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                log.warning("%s is unreadable; the probes start a new one", path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.watches(batch_idx, trainer.global_step):
            self._attach(trainer, pl_module, batch, batch_idx, "train")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        """The first batch of each validation run of fit (not the sanity check): the layers in eval mode."""
        if self.enabled and batch_idx == 0 and dataloader_idx == 0 and not trainer.sanity_checking:
            self._attach(trainer, pl_module, batch, batch_idx, "val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._current is None or self._current["split"] != "val":
            return
        self._detach()
        current, self._current = self._current, None
        with torch.no_grad():  # the shared validation_step returns nothing: the loss of this batch from its logits
            labels, logits = current["labels"], current["logits"]
            loss = None if labels is None or logits is None else nn.functional.cross_entropy(logits.float(), labels)
        record = self._record(current, loss, pl_module)
        record["diagnoses"] = report.diagnose({**record, "params": []}, self.thresholds)
        key = (record["epoch"], record["global_step"])  # a validation run again after a resume replaces its record
        self.val = [v for v in self.val if (v["epoch"], v["global_step"]) != key] + [record]
        self._report(trainer, record, current, "debug/val/")

    def on_validation_epoch_end(self, trainer, pl_module):
        """A validation run cut short before its first batch ended leaves no hook behind for test."""
        if self._current is not None and self._current["split"] == "val":
            self._detach()
            self._current = None

    def _attach(self, trainer, pl_module, batch, batch_idx: int, split: str) -> None:
        net = _net(pl_module)
        labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        self._current = {"split": split, "epoch": trainer.current_epoch + 1, "global_step": trainer.global_step, "batch": batch_idx,
                         "labels": labels.detach() if torch.is_tensor(labels) else None, "layers": {}, "logits": None}
        for name, module in leaf_layers(net):
            self._handles.append(module.register_forward_hook(self._layer_hook(name)))
        self._handles.append(net.register_forward_hook(self._logits_hook))

    def on_after_backward(self, trainer, pl_module):
        self._detach()  # the forward of this step is over: no hook survives into the next one

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self._current is None:
            return
        params = list(_net(pl_module).named_parameters())
        self._current["grad_norms"] = grad_norms(params)
        self._current["weights_before"] = {n: p.detach().clone() for n, p in params if p.requires_grad}
        if self.histograms:
            self._current["grad_samples"] = {n: _sample(p.grad, self.histogram_values) for n, p in params if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._current is None or self._current["split"] != "train":
            return
        self._detach()
        current, self._current = self._current, None
        params = list(_net(pl_module).named_parameters())
        ratios = update_ratios(current.pop("weights_before", {}), params)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        record = self._record(current, loss, pl_module)
        record["params"] = self._param_rows(current, params, ratios)
        record["diagnoses"] = report.diagnose(record, self.thresholds)
        self.steps.append(record)
        self._report(trainer, record, current, "debug/")

    def _report(self, trainer, record: dict, current: dict, prefix: str) -> None:
        if trainer.is_global_zero:
            if self.table:
                log.info("%s", report.table(record))
            elif record["diagnoses"]:
                log.info("debug probe, %s step %d: %s", current["split"], record["global_step"], "; ".join(record["diagnoses"]))
            self._tensorboard(trainer, record, current, prefix)

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero or not (self.steps or self.val):
            return
        out = self._out(trainer)
        self.write_json(out / "debug.json")
        if self.figures and any(s["epoch"] == trainer.current_epoch + 1 for s in self.steps):
            report.figures(self.steps, trainer.current_epoch + 1, out / "debug")

    def on_exception(self, trainer, pl_module, exception):
        self._detach()
        self._current = None
        if trainer.is_global_zero and (self.steps or self.val):
            self.write_json(self._out(trainer) / "debug.json")

    # ------------------------------------------------------------------ hooks on the network
    def _layer_hook(self, name: str):
        def hook(module: nn.Module, inputs, output):
            if not torch.is_tensor(output) or not output.is_floating_point() or self._current is None:
                return
            entry = layer_entry(module, output)
            if self.histograms:
                entry["sample"] = _sample(output, self.histogram_values)
            if output.requires_grad:
                output.register_hook(lambda g: entry.__setitem__("out_grad_norm", torch.linalg.vector_norm(g.detach())))
            self._current["layers"][name] = entry
        return hook

    def _logits_hook(self, module, inputs, output):
        if self._current is not None and torch.is_tensor(output):
            self._current["logits"] = output.detach()

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # ------------------------------------------------------------------ records
    def _record(self, current: dict, loss, pl_module) -> dict:
        """The batch and its layers; a training record adds ``params``, a validation one ``split: val``."""
        num_classes = getattr(pl_module, "num_classes", None)
        labels, logits = current["labels"], current["logits"]

        def counts(t):
            return None if t is None else torch.bincount(t.flatten().long().cpu(), minlength=num_classes or 0).tolist()

        layers = []
        for name, e in current["layers"].items():
            row = layer_row(name, e)
            row["out_grad_norm"] = float(e["out_grad_norm"]) if "out_grad_norm" in e else None
            layers.append(row)
        loss_value = float(loss.detach()) if torch.is_tensor(loss) else (float(loss) if loss is not None else math.nan)
        record = {"split": "val"} if current["split"] == "val" else {}
        record.update({"epoch": current["epoch"], "global_step": current["global_step"], "batch": current["batch"],
                       "loss": loss_value, "labels": counts(labels),
                       "predicted": counts(None if logits is None else logits.argmax(dim=1)), "layers": layers})
        return record

    @staticmethod
    def _param_rows(current: dict, params, ratios: dict) -> list[dict]:
        norms = current.get("grad_norms", {})
        rows = []
        for name, p in params:
            g = norms.get(name)
            rows.append({"name": name, "shape": list(p.shape), "weight_norm": float(torch.linalg.vector_norm(p.detach())),
                         "grad_norm": None if g is None else float(g),
                         "update_ratio": float(ratios[name]) if name in ratios else None})
        return rows

    def _tensorboard(self, trainer, record: dict, current: dict, prefix: str = "debug/") -> None:
        from pytorch_lightning.loggers import TensorBoardLogger

        tb = next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None:
            return
        step = record["global_step"]
        if math.isfinite(record["loss"]):
            tb.add_scalar(f"{prefix}loss", record["loss"], step)
        for row in record["layers"]:
            tb.add_scalar(f"{prefix}act_std/{row['name']}", row["std"], step)
            if "dead_fraction" in row:
                tb.add_scalar(f"{prefix}dead_fraction/{row['name']}", row["dead_fraction"], step)
                tb.add_scalar(f"{prefix}dead_element_fraction/{row['name']}", row["dead_element_fraction"], step)
            if row["out_grad_norm"] is not None:
                tb.add_scalar(f"{prefix}out_grad_norm/{row['name']}", row["out_grad_norm"], step)
        for row in record.get("params", []):
            if row["grad_norm"] is not None:
                tb.add_scalar(f"{prefix}grad_norm/{row['name']}", row["grad_norm"], step)
            if row["update_ratio"] is not None:
                tb.add_scalar(f"{prefix}update_ratio/{row['name']}", row["update_ratio"], step)
        if self.histograms:
            for name, e in current["layers"].items():
                if "sample" in e and torch.isfinite(e["sample"]).all():
                    tb.add_histogram(f"{prefix}activations/{name}", e["sample"], step)
            for name, g in current.get("grad_samples", {}).items():
                if torch.isfinite(g).all():
                    tb.add_histogram(f"{prefix}grads/{name}", g, step)

    def write_json(self, path: Path) -> None:
        """Every number of every watched step and validation batch; written to a temporary file,
        then renamed over."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"thresholds": self.thresholds, "every_n_steps": self.every_n_steps,
                                   "steps": self.steps, "val": self.val}, allow_nan=True))
        os.replace(tmp, path)

    @staticmethod
    def _out(trainer) -> Path:
        return Path(trainer.default_root_dir)


def _net(pl_module: nn.Module) -> nn.Module:
    """The package's network inside the shared ClassificationModule (``.net``), or the module itself."""
    return getattr(pl_module, "net", pl_module)


def _sample(x: torch.Tensor, n: int) -> torch.Tensor:
    """At most ``n`` evenly strided values, copied to the CPU for a histogram."""
    flat = x.detach().reshape(-1)
    stride = max(1, flat.numel() // n)
    return flat[::stride][:n].float().cpu().clone()
