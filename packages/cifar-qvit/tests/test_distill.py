"""DGD: zero for a student identical to its teacher, positive otherwise."""

import pytest
import torch
import torch.nn.functional as F

from cifar_qvit.distill import DGDLoss, dgd_distance, fp_teacher, similarity
from cifar_qvit.model import QViT


def _hook(state):
    hook = DGDLoss.__new__(DGDLoss)
    torch.nn.Module.__init__(hook)
    hook.state, hook.weight, hook.kd_weight, hook.kd_temperature, hook._teacher = state, 1.0, 0.5, 4.0, []
    return hook


class _Module:  # what the engine passes: an object whose .net is the student
    def __init__(self, net):
        self.net = net


def test_similarity_rows_are_unit_norm():
    g = similarity(torch.randn(2, 3, 5, 4))
    assert g.shape == (2, 3, 5, 5) and torch.allclose(g.norm(dim=-1), torch.ones(2, 3, 5))


def test_dgd_is_zero_for_the_same_network_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    fp = QViT(10, pretrained=None, size="tiny", nbits_w=32, nbits_a=32).train()
    state = {f"hf.{k}": v.clone() for k, v in fp.hf.state_dict().items()}
    logits = fp(x)
    terms = _hook(state)(_Module(fp), x, None, logits)
    assert terms["dgd"].item() == 0.0 and abs(terms["kd"].item()) < 1e-6

    quantized = QViT(10, pretrained=None, size="tiny", nbits_w=4, nbits_a=4).train()
    quantized.hf.load_state_dict(fp.hf.state_dict(), strict=False)
    logits = quantized(x)
    terms = _hook(state)(_Module(quantized), x, None, logits)
    assert terms["dgd"].item() > 0 and terms["kd"].item() > 0
    terms["dgd"].backward()  # the distance trains the student's quantizers and IRM
    assert quantized.attention_modules()[0].qvit.irm_q.gamma.grad is not None


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_term_is_the_kl_of_teacher_to_student_at_the_temperature(temperature):
    """Logit distillation as Hinton et al. define it: kd_weight x T^2 x KL(teacher || student) of the
    softmaxes at temperature T, averaged over the batch (written out here, not through kl_div)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    fp = QViT(10, pretrained=None, size="tiny", nbits_w=32, nbits_a=32).eval()
    state = {f"hf.{k}": v.clone() for k, v in fp.hf.state_dict().items()}
    with torch.no_grad():
        teacher_logits = fp(x)
    student = QViT(10, pretrained=None, size="tiny", nbits_w=32, nbits_a=32).train()  # other random weights
    logits = student(x)
    hook = _hook(state)
    hook.weight, hook.kd_temperature = 0.0, temperature
    terms = hook(_Module(student), x, None, logits)
    log_p, log_q = (F.log_softmax(z.detach().double() / temperature, -1) for z in (teacher_logits, logits))
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
    reverse = (log_q.exp() * (log_q - log_p)).sum(-1).mean().item()
    assert set(terms) == {"kd"}  # weight 0: no DGD term
    assert terms["kd"].item() == pytest.approx(0.5 * temperature**2 * kl, rel=1e-3)  # float32 against float64
    assert abs(reverse - kl) > 1e-2 * kl  # the two directions differ by more than the tolerance: the test tells them apart


def test_teacher_is_the_float_network_and_stays_out_of_the_state_dict():
    student = QViT(10, pretrained=None, size="tiny").train()
    state = {f"hf.{k}": v for k, v in QViT(10, pretrained=None, size="tiny", nbits_w=32, nbits_a=32).hf.state_dict().items()}
    teacher = fp_teacher(student, state)
    assert not any(hasattr(m, "wq") for m in teacher.modules()) and not any(p.requires_grad for p in teacher.parameters())
    hook = _hook(state)
    student(torch.randn(2, 3, 32, 32))
    hook(_Module(student), torch.randn(2, 3, 32, 32), None, torch.zeros(2, 10))
    assert hook.state_dict() == {} and len(hook._teacher) == 1


def test_distance_sums_layers_and_heads():
    a = [(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)) for _ in range(2)]
    b = [(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)) for _ in range(2)]
    one = dgd_distance(a[:1], b[:1])
    assert torch.allclose(dgd_distance(a, b), one + dgd_distance(a[1:], b[1:]))


def test_gradient_checkpointing_gives_the_same_gradients_with_dgd():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    fp = QViT(10, pretrained=None, size="tiny", nbits_w=32, nbits_a=32)
    state = {f"hf.{k}": v.clone() for k, v in fp.hf.state_dict().items()}
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(1)
        net = QViT(10, pretrained=None, size="tiny", gradient_checkpointing=checkpointing).train()
        net.hf.load_state_dict(fp.hf.state_dict(), strict=False)
        net.hf.vit.embeddings.dropout.p = 0.0
        logits = net(x)
        loss = logits.logsumexp(1).mean() + _hook(state)(_Module(net), x, None, logits)["dgd"]
        loss.backward()
        grads.append(net.hf.vit.layers[0].attention.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
