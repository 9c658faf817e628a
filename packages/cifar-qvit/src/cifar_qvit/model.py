"""A Hugging Face ViTForImageClassification, optionally fake-quantized Q-ViT style.

The network takes the shared loader's batches (normalized with ``data.mean``/``data.std``, which
the package sets to the model's own ``image_mean``/``image_std``), resizes them on the device to
the model's input size and returns logits.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifar_qvit.attention import QAttention, quantize_qkv_input
from cifar_qvit.attention import register as register_attention
from cifar_qvit.quant import FirstBatchInit, LsqPlusAct, QuantConv2d, QuantLinear, is_quantized
from cifar_shared.errors import UserError

log = logging.getLogger("cifar_qvit.model")

# Random-init sizes (model.pretrained=null). tiny: 32 px, patch 4, for CPU runs and tests.
SIZES = {
    "tiny": dict(image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256),
    "small": dict(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(image_size=224, patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}

# Roles of the layers Q-ViT quantizes, recognised from the last part(s) of a module's name: the
# 4.x names (attention.attention.query, intermediate.dense, ...) and the 5.x ones (q_proj, fc1, ...).
_ROLE_SUFFIXES = [
    ("query", ("query", "q_proj")),
    ("key", ("key", "k_proj")),
    ("value", ("value", "v_proj")),
    ("attn_out", ("o_proj", "attention.output.dense", "out_proj")),
    ("mlp_fc1", ("fc1", "intermediate.dense")),
    ("mlp_fc2", ("fc2", "output.dense")),
    ("classifier", ("classifier",)),
]
ROLES = ("patch_embed", *(r for r, _ in _ROLE_SUFFIXES))


def layer_role(name: str, module: nn.Module) -> str | None:
    """The Q-ViT role of one module, or None for modules that are not quantized."""
    if isinstance(module, nn.Conv2d):
        return "patch_embed" if "embeddings" in name else None
    if not isinstance(module, nn.Linear):
        return None
    for role, suffixes in _ROLE_SUFFIXES:
        if any(name == s or name.endswith("." + s) for s in suffixes):
            return role
    raise ValueError(f"linear layer {name!r} has no known Q-ViT role: this transformers version renamed ViT's layers")


def attention_modules(hf: nn.Module) -> list[nn.Module]:
    """The modules that call the attention function: the parents of the query projections."""
    found = []
    for name, module in hf.named_modules():
        if any(layer_role(f"{name}.{child}", m) == "query" for child, m in module.named_children()):
            found.append(module)
    return found


def _take_qkv_input_quantizer(attention: nn.Module) -> LsqPlusAct | None:
    """One input quantizer for the query/key/value projections of ``attention`` (they read the
    same tensor), taken from them; None when their input bits differ or are not all quantized."""
    projections = [m for n, m in attention.named_children() if layer_role(n, m) in ("query", "key", "value")]
    quantizers = [getattr(p, "aq", None) for p in projections]
    if len(quantizers) != 3 or None in quantizers or len({q.bits for q in quantizers}) != 1:
        return None
    for p in projections:
        p.aq = None
    return quantizers[0]


def _hf_config(pretrained: str | None, size: str, num_classes: int):
    from transformers import ViTConfig

    if pretrained is None:
        if size not in SIZES:
            raise UserError(f"model.size={size!r} is invalid: choose one of {', '.join(SIZES)}")
        return ViTConfig(**SIZES[size], num_labels=num_classes)
    try:
        return ViTConfig.from_pretrained(pretrained, num_labels=num_classes)
    except OSError:
        raise UserError(_no_weights(pretrained)) from None


def _no_weights(pretrained: str) -> str:
    return (f"cannot load ViT weights '{pretrained}' (no network and not in the Hugging Face cache): download them once "
            f"(`hf download {pretrained}`, then HF_HUB_OFFLINE=1), or set model.pretrained=DIR "
            "(a save_pretrained folder), or model.pretrained=null model.size=tiny|small|base|large for random init")


def build_hf(pretrained: str | None, size: str, num_classes: int, load_weights: bool = True) -> nn.Module:
    """ViTForImageClassification with a ``num_classes`` head: pretrained (head replaced) or random."""
    from transformers import ViTForImageClassification
    from transformers.utils import logging as hf_logging

    impl = register_attention()
    if pretrained is not None and Path(os.path.expanduser(str(pretrained))).exists():
        pretrained = os.path.expanduser(str(pretrained))
    if pretrained is None or not load_weights:
        config = _hf_config(pretrained, size, num_classes)
        config._attn_implementation = impl
        return ViTForImageClassification(config)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized classifier" notice: expected, we replace the head
    try:
        return ViTForImageClassification.from_pretrained(
            pretrained, num_labels=num_classes, ignore_mismatched_sizes=True, attn_implementation=impl)
    except OSError:
        raise UserError(_no_weights(pretrained)) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def load_net_state(run_dir: str | Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The best checkpoint of a finished run folder (the shared reader: weights_only, best by its
    recorded val/acc, config targets checked) and its network weights, keys relative to the network."""
    from cifar_shared.runs.folder import RunFolder

    try:
        run = RunFolder.open(run_dir)
        path = run.select_checkpoint("best").path
    except UserError as e:
        raise UserError(f"model.init_from={run_dir}: {e}") from None
    return path, run.net_state(path, "point model.init_from at a finished qvit-train run folder")


class QViT(nn.Module):
    """ViT classifier; quantized Q-ViT style when ``nbits_w``/``nbits_a`` are below 32.

    ``layer_bits``: per-layer overrides ``{role or name pattern: {w: bits, a: bits}}``, e.g.
    ``{patch_embed: {w: 8, a: 8}, classifier: {w: 8, a: 8}}`` (the ``bits=qvit`` preset).
    ``init_from``: a finished (full-precision) run folder whose best weights are loaded before
    quantizing; the DGD loss hook uses the same folder as its teacher.
    """

    def __init__(self, num_classes: int = 10, pretrained: str | None = "google/vit-large-patch16-224", size: str = "tiny",
                 nbits_w: int = 4, nbits_a: int = 4, layer_bits: dict | None = None, quant_attention: bool = True,
                 irm: bool = True, init_from: str | None = None, gradient_checkpointing: bool = False,
                 image_mean=None, image_std=None, load_weights: bool = True):
        super().__init__()
        self.hf = build_hf(pretrained, size, num_classes, load_weights=load_weights and init_from is None)
        self.image_size = int(self.hf.config.image_size)
        self.nbits_w, self.nbits_a = nbits_w, nbits_a
        if init_from is not None:
            self._load_fp(init_from, num_classes)
        if gradient_checkpointing:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.quantized = self._quantize(nbits_w, nbits_a, dict(layer_bits or {}), quant_attention, irm)
        self.capture_qk: bool | None = None  # None: capture queries/keys while training
        self._first_batch_seen = False
        self._attention = attention_modules(self.hf)  # a plain list: not registered twice
        if pretrained is not None and load_weights:
            self._check_preprocessing(pretrained, image_mean, image_std)

    def _check_preprocessing(self, pretrained: str, mean, std) -> None:
        """A local folder's preprocessor_config.json states the statistics the ViT was trained with."""
        path = Path(os.path.expanduser(str(pretrained))) / "preprocessor_config.json"
        if not path.exists() or mean is None:
            return
        import json

        saved = json.loads(path.read_text())
        want = [saved.get("image_mean"), saved.get("image_std")]
        have = [list(mean), list(std)]
        if None in want or all(torch.allclose(torch.tensor(w, dtype=torch.float), torch.tensor(h, dtype=torch.float)) for w, h in zip(want, have)):
            return
        flat = lambda v: "[" + ",".join(f"{x:g}" for x in v) + "]"
        raise UserError(f"{path} normalizes with mean {want[0]} and std {want[1]}, not the configured {have[0]} / {have[1]}: "
                        f"set model.image_mean={flat(want[0])} model.image_std={flat(want[1])}")

    def _load_fp(self, run_dir: str, num_classes: int) -> None:
        path, state = load_net_state(run_dir)
        state = {k.removeprefix("hf."): v for k, v in state.items() if k.startswith("hf.")}
        head = state.get("classifier.weight")
        if head is not None and head.shape[0] != num_classes:
            raise UserError(f"model.init_from={run_dir} has a {head.shape[0]}-class head but the data has {num_classes} classes: use a run on the same data")
        fp_keys = set(self.hf.state_dict())
        if not fp_keys <= set(state):
            raise UserError(f"model.init_from={run_dir} holds a different ViT (missing e.g. {sorted(fp_keys - set(state))[0]}): give model.pretrained/model.size as that run did")
        self.hf.load_state_dict({k: state[k] for k in fp_keys})
        log.info("weights from %s", path)

    def _bits(self, name: str, role: str, overrides: dict, wbits: int, abits: int) -> tuple[int, int]:
        for pattern, bits in overrides.items():
            if pattern == role or fnmatch.fnmatch(name, pattern):
                wbits, abits = bits.get("w", wbits), bits.get("a", abits)
        return wbits, abits

    def _quantize(self, nbits_w: int, nbits_a: int, overrides: dict, quant_attention: bool, irm: bool) -> list[str]:
        bad = [k for k in overrides if k not in ROLES and not any(c in k for c in "*?[.")]
        if bad:
            raise UserError(f"model.layer_bits.{bad[0]} is not a layer role: use one of {', '.join(ROLES)} or a module-name pattern")
        done = []
        for name, module in list(self.hf.named_modules()):
            role = layer_role(name, module)
            if role is None:
                continue
            wbits, abits = self._bits(name, role, overrides, nbits_w, nbits_a)
            if not (is_quantized(wbits) or is_quantized(abits)):
                continue
            cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
            parent_name, _, child = name.rpartition(".")
            setattr(self.hf.get_submodule(parent_name) if parent_name else self.hf, child, cls.from_float(module, wbits, abits))
            done.append(f"{name}[{role} W{wbits if is_quantized(wbits) else 32}A{abits if is_quantized(abits) else 32}]")
        heads = self.hf.config.num_attention_heads
        attn_bits = nbits_a if quant_attention else 32
        use_irm = irm and is_quantized(nbits_a)
        shared = 0
        for module in attention_modules(self.hf):
            qkv_input = _take_qkv_input_quantizer(module)
            if is_quantized(attn_bits) or use_irm or qkv_input is not None:
                module.qvit = QAttention(heads, attn_bits, irm=use_irm, qkv_input=qkv_input).to(next(module.parameters()).device)
            if qkv_input is not None:
                module.register_forward_pre_hook(quantize_qkv_input, with_kwargs=True)
                shared += 1
        if done:
            blocks = self.hf.config.num_hidden_layers
            log.info("quantized %d layers (%d blocks x 6 + patch embedding + classifier = %d)%s%s: %s", len(done), blocks,
                     6 * blocks + 2, f"; per-head q/k/v and attention probabilities at {attn_bits} bits" if is_quantized(attn_bits) else "",
                     "; query/key/value share one input quantizer per block (Q-ViT's fused qkv)" if shared else "",
                     ", ".join(done))
        return done

    def attention_modules(self) -> list[nn.Module]:
        return list(self._attention)

    def take_captured(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (queries, keys) each attention layer saw in the last forward, then forgotten."""
        found = [m.__dict__.pop("captured_qk", None) for m in self._attention]
        if any(f is None for f in found):
            raise RuntimeError("no captured queries/keys: run a forward with capture on (training mode) first")
        return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        capture = self.training if self.capture_qk is None else self.capture_qk
        for module in self._attention:
            module.capture_qk = capture
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if self.training and not self._first_batch_seen:
            self._init_from_first_batch(x)
        return self.hf(pixel_values=x).logits

    @torch.compiler.disable
    @torch.no_grad()
    def _init_from_first_batch(self, x: torch.Tensor) -> None:
        """The quantizers and IRM set themselves from the first training batch, here in an eager pass
        of its own (the same values as within the step): a compiled forward then never traces that
        one-off branch, whose graph break inside transformers' layers made dynamo run them eagerly."""
        if any(isinstance(m, FirstBatchInit) and not m._ready for m in self.modules()):
            with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):  # its dropout draws are not the run's
                self.hf(pixel_values=x)
        self._first_batch_seen = True

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._first_batch_seen = False  # the next training batch checks the loaded quantizers again
