"""The loss-hook seam of ClassificationModule: extra named terms join the training loss only."""

import functools

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cifar_shared.engine.module import ClassificationModule


class Penalty(torch.nn.Module):
    """A hook with a buffer: it must move with the module and see the step's tensors."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def __call__(self, module, x, y, logits):
        self.calls += 1
        assert logits.shape == (x.shape[0], module.num_classes) and y.shape == (x.shape[0],)
        return {"l2": 0.5 * logits.pow(2).mean()}


def _module(hook):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    return ClassificationModule(net, 3, optimizer=functools.partial(torch.optim.SGD, lr=0.1), loss_hook=hook)


def test_hook_term_is_added_in_training_and_logged():
    x, y = torch.randn(16, 3, 2, 2), torch.randint(0, 3, (16,))
    hook = Penalty()
    module = _module(hook)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer.fit(module, loader, loader)
    assert hook.calls.item() == 2  # two training batches; validation does not call it
    assert "train/loss_l2" in trainer.callback_metrics and trainer.callback_metrics["train/loss_l2"] > 0
    assert "loss_hook.calls" in module.state_dict()


def _training_loss(module, x, y):
    module.log = module.log_dict = lambda *a, **k: None  # outside a Trainer loop
    return module.training_step((x, y), 0)


def test_training_loss_is_cross_entropy_plus_the_hook_terms():
    x, y = torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))
    module = _module(Penalty())
    with torch.no_grad():
        logits = module(x)
    assert torch.allclose(_training_loss(module, x, y), F.cross_entropy(logits, y) + 0.5 * logits.pow(2).mean())
    assert torch.allclose(_training_loss(_module(None), x, y), F.cross_entropy(logits, y))
