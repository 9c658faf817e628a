"""Q-ViT's distribution-guided distillation (DGD), as the shared engine's loss hook.

For every attention layer and head, the row-normalised similarity matrices q·qᵀ and k·kᵀ of the
quantized student and of the frozen full-precision teacher; their L2 distances summed over layers
and heads (averaged over the batch) and weighted. Optional logit distillation (KL at a temperature).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from cifar_qvit.model import QViT, load_net_state
from cifar_qvit.quant import QuantConv2d, QuantLinear, dequantize
from cifar_shared.errors import UserError


def similarity(x: torch.Tensor) -> torch.Tensor:
    """Row-normalised x·xᵀ per head: (B, H, N, D) -> (B, H, N, N), each row of unit L2 norm."""
    return F.normalize(x @ x.transpose(-1, -2), dim=-1)


def dgd_distance(student: list[tuple[torch.Tensor, torch.Tensor]], teacher: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Sum over layers and heads of ||G_s - G_t||_2 for queries and keys, averaged over the batch."""
    if len(student) != len(teacher):
        raise ValueError(f"student has {len(student)} attention layers, teacher {len(teacher)}")
    total = student[0][0].new_zeros(())
    for (qs, ks), (qt, kt) in zip(student, teacher):
        for s, t in ((qs, qt), (ks, kt)):
            diff = similarity(s.float()) - similarity(t.float())
            total = total + diff.flatten(2).norm(dim=-1).sum(1).mean()  # norm per head, sum heads, mean batch
    return total


def fp_teacher(student: QViT, state: dict[str, torch.Tensor]) -> QViT:
    """The student's architecture without quantizers, IRM or attention quantizers, holding ``state``."""
    teacher = copy.deepcopy(student)
    for name, module in list(teacher.hf.named_modules()):
        if isinstance(module, QuantLinear | QuantConv2d):
            parent, _, child = name.rpartition(".")
            setattr(teacher.hf.get_submodule(parent) if parent else teacher.hf, child, dequantize(module))
    for module in teacher.attention_modules():
        if hasattr(module, "qvit"):
            del module.qvit
    hf_state = {k: v for k, v in state.items() if k.startswith("hf.")}
    missing = set(teacher.state_dict()) - set(hf_state)
    if missing:
        raise UserError(f"the teacher run holds a different ViT (missing e.g. {sorted(missing)[0]}): give model.pretrained/model.size as that run did")
    teacher.load_state_dict({k: hf_state[k] for k in teacher.state_dict()})
    teacher.capture_qk = True
    teacher.eval().requires_grad_(False)
    return teacher


class DGDLoss(nn.Module):
    """Loss hook ``{"dgd": ..., "kd": ...}``. The teacher is built on the first call from the
    student's own architecture and the teacher run's best checkpoint; it is kept out of this
    module's registered children, so it is neither trained nor written into checkpoints (resuming
    rebuilds it from the same run folder)."""

    def __init__(self, teacher_run: str | None, weight: float = 1.0, kd_weight: float = 0.0, kd_temperature: float = 4.0):
        super().__init__()
        if not teacher_run:
            raise UserError("loss_hook=dgd needs a teacher: set model.init_from=RUN_DIR (a finished full-precision qvit-train run)")
        self.state = load_net_state(teacher_run)[1]  # fails now, before the run folder is written
        self.weight, self.kd_weight, self.kd_temperature = weight, kd_weight, kd_temperature
        self._teacher: list[QViT] = []  # a list: not a submodule

    def teacher(self, student: QViT, device: torch.device) -> QViT:
        if not self._teacher:
            self._teacher.append(fp_teacher(student, self.state))
            self.state = None
        return self._teacher[0].to(device)

    def __call__(self, module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        student: QViT = module.net
        s_qk = student.take_captured()  # before the first call deep-copies the student
        teacher = self.teacher(student, x.device)
        with torch.no_grad():
            teacher_logits = teacher(x)
        t_qk = teacher.take_captured()
        terms = {}
        if self.weight > 0:
            terms["dgd"] = self.weight * dgd_distance(s_qk, t_qk)
        if self.kd_weight > 0:
            t = self.kd_temperature
            kd = F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(teacher_logits / t, -1), log_target=True, reduction="batchmean")
            terms["kd"] = self.kd_weight * t * t * kd
        return terms
