"""The ViT wrapper: layers found by role, FP equivalence with transformers' own attention, resizing."""

import pytest
import torch

from cifar_qvit.model import QViT, build_hf
from cifar_shared import UserError


def test_roles_cover_the_architecture():
    net = QViT(10, pretrained=None, size="tiny")
    roles = [entry.split("[")[1].split()[0] for entry in net.quantized]
    blocks = net.hf.config.num_hidden_layers
    assert len(roles) == 6 * blocks + 2
    for role in ("query", "key", "value", "attn_out", "mlp_fc1", "mlp_fc2"):
        assert roles.count(role) == blocks
    assert roles.count("patch_embed") == 1 and roles.count("classifier") == 1
    assert len(net.attention_modules()) == blocks and all(hasattr(m, "qvit") for m in net.attention_modules())


def test_full_precision_equals_transformers_eager_attention():
    torch.manual_seed(0)
    net = QViT(10, pretrained=None, size="tiny", nbits_w=32, nbits_a=32).eval()
    assert net.quantized == [] and not any(hasattr(m, "qvit") for m in net.attention_modules())
    eager = build_hf(None, "tiny", 10)
    eager.config._attn_implementation = "eager"
    eager.load_state_dict(net.hf.state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), eager.eval()(pixel_values=x).logits, atol=1e-5)


def test_layer_bits_preset_and_full_precision_layers():
    net = QViT(10, pretrained=None, size="tiny", layer_bits={"patch_embed": {"w": 8, "a": 8}, "classifier": {"w": 8, "a": 8}, "*.mlp.fc2": {"w": 32, "a": 32}})
    text = " ".join(net.quantized)
    assert "projection[patch_embed W8A8]" in text and "classifier[classifier W8A8]" in text
    assert "fc2" not in text and len(net.quantized) == 5 * 4 + 2


def test_query_key_value_share_one_input_quantizer_per_block():
    """As Q-ViT's fused qkv layer: the three projections' common input is quantized once per block,
    with the same values as each projection quantizing it alone; mixed input bits keep their own."""
    torch.manual_seed(0)
    net = QViT(10, pretrained=None, size="tiny").train()
    attention = net.attention_modules()[0]
    shared = attention.qvit.qkv_input
    assert shared is not None and all(getattr(attention, n).aq is None for n in ("q_proj", "k_proj", "v_proj"))
    seen = {}
    for n in ("q_proj", "k_proj", "v_proj"):
        getattr(attention, n).register_forward_pre_hook(lambda m, args, n=n: seen.__setitem__(n, args[0]))
    hidden = []
    attention.register_forward_pre_hook(lambda m, args, kwargs: hidden.append((args or (kwargs["hidden_states"],))[0]), with_kwargs=True, prepend=True)
    net(torch.randn(4, 3, 32, 32))
    assert seen["q_proj"] is seen["k_proj"] is seen["v_proj"]  # one quantized tensor feeds all three
    torch.testing.assert_close(seen["q_proj"], shared(hidden[-1]))
    assert len(torch.unique(seen["q_proj"])) <= 2**4
    mixed = QViT(10, pretrained=None, size="tiny", layer_bits={"query": {"a": 8}})
    attention = mixed.attention_modules()[0]
    assert attention.qvit.qkv_input is None and attention.q_proj.aq.bits == 8 and attention.k_proj.aq.bits == 4


def test_unknown_layer_role_is_a_user_error():
    with pytest.raises(UserError, match="model.layer_bits.head is not a layer role"):
        QViT(10, pretrained=None, size="tiny", layer_bits={"head": {"w": 8}})


def test_images_are_resized_to_the_model_input(monkeypatch):
    net = QViT(10, pretrained=None, size="tiny", nbits_w=32, nbits_a=32).eval()
    seen = []
    net.hf.vit.embeddings.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    with torch.no_grad():
        net(torch.randn(2, 3, 24, 24))
    assert seen[0][-2:] == (32, 32)


def test_first_batch_init_runs_once_and_again_after_loading_a_fresh_state():
    """The quantizers and IRM set themselves in an eager pass before the first training step (so a
    compiled step never traces it); loading an uninitialised state dict (the LR finder's restore)
    makes the next training batch set them again, and the pass leaves the RNG as it found it."""
    from cifar_qvit.quant import FirstBatchInit

    torch.manual_seed(0)
    net = QViT(10, pretrained=None, size="tiny").train()
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    parts = [m for m in net.modules() if isinstance(m, FirstBatchInit)]
    assert parts and not any(m._ready for m in parts)
    x = torch.randn(4, 3, 32, 32)
    state = torch.get_rng_state()
    with torch.no_grad():
        net._init_from_first_batch(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(m._ready and bool(m.initialized) for m in parts)
    net.load_state_dict(fresh)
    assert not any(m._ready for m in parts)
    net(x)
    assert all(m._ready and bool(m.initialized) for m in parts)


@pytest.mark.parametrize("bits", [2, 4])
def test_values_entering_probs_at_v_are_quantized_per_head_in_every_block(monkeypatch, bits):
    """Q-ViT quantizes both operands of probs @ v: the value tensor each block multiplies takes at
    most 2^bits distinct levels per head (it was full precision before)."""
    torch.manual_seed(0)
    net = QViT(10, pretrained=None, size="tiny", nbits_w=bits, nbits_a=bits).train()
    x = torch.randn(4, 3, 32, 32)
    net(x)  # the quantizers set themselves from this first training batch
    head_dim = net.hf.config.hidden_size // net.hf.config.num_attention_heads
    values, matmul = [], torch.matmul

    def recording_matmul(a, b, *args, **kwargs):
        if a.dim() == 4 and a.shape[-1] == a.shape[-2] and b.shape[-1] == head_dim:  # probs (B,H,N,N) @ v (B,H,N,D)
            values.append(b.detach())
        return matmul(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "matmul", recording_matmul)
    with torch.no_grad():
        net.eval()(x)
    assert len(values) == net.hf.config.num_hidden_layers
    for v in values:
        for head in range(v.shape[1]):
            levels = torch.unique(v[:, head]).numel()
            assert 2 < levels <= 2**bits, levels
