"""The probes' numbers against hand-built layers and torch's own reference functions."""

import pytest
import torch
from torch import nn

from cifar_debugcnn.probes import LayerProbes
from cifar_debugcnn.stats import dead_elements, dead_units, saturated_fraction


def hand_set_layer() -> nn.Sequential:
    """Linear(4, 6) + ReLU whose units 0, 2 and 5 can never fire: zero weights, negative bias."""
    layer = nn.Linear(4, 6)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0] * 4, [1, 0, 0, 0], [0.0] * 4, [0, 1, 0, 0], [0, 0, 1, 1], [0.0] * 4]))
        layer.bias.copy_(torch.tensor([-1.0, 0.0, -0.5, 0.0, 0.1, -2.0]))
    return nn.Sequential(layer, nn.ReLU())


def test_dead_units_of_a_hand_set_layer():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    count, units = dead_units(hand_set_layer()(x))
    assert (int(count), units) == (3, 6)


def test_a_unit_alive_for_one_sample_is_not_dead():
    out = torch.zeros(8, 3)
    out[5, 1] = 0.2
    assert int(dead_units(out)[0]) == 2


def test_conv_channels_are_dead_only_when_zero_everywhere():
    out = torch.zeros(4, 5, 6, 6)
    out[3, 0, 5, 5] = 1.0  # channel 0 fires once, at one position of one sample
    out[:, 2] = 0.5
    assert int(dead_units(out)[0]) == 3


def test_dead_elements_count_positions_a_channel_never_fires_at():
    """Per element, a channel that fires at one position is dead at its other three; per channel it is alive."""
    out = torch.zeros(4, 3, 2, 2)
    out[3, 0, 1, 1] = 1.0  # channel 0: one live element of 4
    out[:, 2] = 0.5        # channel 2: all 4 live; channel 1: all zero
    assert (int(dead_elements(out)[0]), dead_elements(out)[1]) == (3 + 4, 12)
    assert (int(dead_units(out)[0]), dead_units(out)[1]) == (1, 3)


def test_for_features_an_element_is_a_unit():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    out = hand_set_layer()(x)
    assert [int(dead_elements(out)[0]), dead_elements(out)[1]] == [int(dead_units(out)[0]), dead_units(out)[1]] == [3, 6]


def test_saturation_of_a_tanh():
    x = torch.tensor([-5.0, -0.1, 0.0, 0.2, 4.0, 10.0])
    assert float(saturated_fraction(torch.tanh(x), -1.0, 1.0)) == pytest.approx(0.5)


class OneBatch(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.x, self.y


def _fit_one_step(tmp_path, net, **probe_settings):
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.num_classes = net, 3

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    probes = LayerProbes(every_n_steps=1, histograms=False, figures=False, **probe_settings)
    grads = {}

    class Keep(pl.Callback):  # the reference: p.grad as the optimizer sees it
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            grads.update({n: p.grad.clone() for n, p in pl_module.net.named_parameters()})

    module = Module()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    loader = torch.utils.data.DataLoader(OneBatch(), batch_size=None)
    trainer = pl.Trainer(max_epochs=1, callbacks=[probes, Keep()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, loader)
    return probes.steps[0], grads, before, net


def test_reported_grad_norms_and_update_ratios_match_torch(tmp_path):
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    record, grads, before, net = _fit_one_step(tmp_path, net)
    params = {p["name"]: p for p in record["params"]}
    assert set(params) == set(grads) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    for name, p in net.named_parameters():
        assert params[name]["grad_norm"] == pytest.approx(float(torch.linalg.vector_norm(grads[name])), rel=1e-6)
        expected = torch.linalg.vector_norm(p.detach() - before[name]) / torch.linalg.vector_norm(before[name])
        assert params[name]["update_ratio"] == pytest.approx(float(expected), rel=1e-5)
        assert float(expected) > 0  # SGD moved every tensor


def test_a_training_step_reports_the_hand_set_dead_units(tmp_path):
    net = nn.Sequential(*hand_set_layer(), nn.Linear(6, 3))
    record, _, _, _ = _fit_one_step(tmp_path, net)
    relu = next(r for r in record["layers"] if r["name"] == "1")
    assert (relu["dead"], relu["units"], relu["dead_fraction"]) == (3, 6, 0.5)
    assert (relu["dead_elements"], relu["elements"], relu["dead_element_fraction"]) == (3, 6, 0.5)
    assert relu["shape"] == [32, 6] and relu["min"] == 0.0
    assert sum(record["labels"]) == 32 and sum(record["predicted"]) == 32
    assert not any("dead" in d for d in record["diagnoses"])  # 50 % is not above the 0.5 threshold
    linear = next(r for r in record["layers"] if r["name"] == "0")
    assert linear["out_grad_norm"] is not None and linear["out_grad_norm"] > 0


def test_the_diagnosis_names_the_layer_with_dead_units(tmp_path):
    net = nn.Sequential(*hand_set_layer(), nn.Linear(6, 3))
    record, _, _, _ = _fit_one_step(tmp_path, net, dead_threshold=0.4)
    assert [d for d in record["diagnoses"] if "dead" in d] == [
        "1: 3 of 6 units dead (50% > 40%, zero for every sample of the batch); lower the lr, check the bias/init before it, or use LeakyReLU"]


def test_a_zero_tensor_has_no_update_ratio(tmp_path):
    """A BatchNorm bias starts at zero: its update/weight ratio is undefined, not 1e9."""
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    record, _, before, _ = _fit_one_step(tmp_path, net)
    params = {p["name"]: p for p in record["params"]}
    assert not before["1.bias"].any()
    assert params["1.bias"]["update_ratio"] is None
    assert params["1.weight"]["update_ratio"] > 0 and params["0.weight"]["update_ratio"] > 0
