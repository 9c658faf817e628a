"""trainer.accumulate_grad_batches with the TensorBatchLoader (not a DataLoader): batch 64 x 4
must take the optimizer steps of batch 256, and the schedulers and the LR finder must count them."""

import functools

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from cifar_shared.data.datamodule import ImageDataModule
from cifar_shared.data.loader import TensorBatchLoader
from cifar_shared.engine import schedulers
from cifar_shared.engine.module import ClassificationModule

# 400 synthetic images, 10 % validation: 360 to train = 6 batches of 64 (4 + 2 accumulated: 2
# optimizer steps) or 2 batches of 256 (2 steps) per epoch
DATA = {"name": "synthetic", "num_classes": 10, "train_size": 400, "test_size": 100, "image_size": 32,
        "seed": 0, "val_fraction": 0.1, "num_workers": 0}
EPOCHS = 3


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def fit(batch_size: int, accumulate: int, scheduler) -> dict:
    pl.seed_everything(0, verbose=False)
    dm = ImageDataModule(DATA, {"pipeline": "tensor", "crop_padding": 4, "flip": True}, batch_size, seed=0)
    net = tiny_net()
    net(torch.zeros(1, 3, 32, 32))  # materialize the lazy layer
    module = ClassificationModule(net, 10, optimizer=functools.partial(torch.optim.SGD, lr=0.1), scheduler=scheduler)
    steps = []
    module.on_before_optimizer_step = lambda optimizer: steps.append(optimizer.param_groups[0]["lr"])
    trainer = pl.Trainer(max_epochs=EPOCHS, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, datamodule=dm)
    assert isinstance(trainer.train_dataloader, TensorBatchLoader)
    sched = trainer.lr_scheduler_configs[0].scheduler
    return {"estimated": trainer.estimated_stepping_batches, "global_step": trainer.global_step, "lrs": steps,
            "scheduler_steps": sched.last_epoch, "final_lr": trainer.optimizers[0].param_groups[0]["lr"]}


@pytest.mark.parametrize("name, scheduler", [
    ("cosine", functools.partial(schedulers.cosine, warmup_epochs=1, min_lr=0.001)),
    ("step", functools.partial(schedulers.step, warmup_epochs=1, step_epochs=1, gamma=0.5)),
])
def test_accumulating_4_batches_of_64_steps_like_batches_of_256(name, scheduler):
    big = fit(256, 1, scheduler)
    small = fit(64, 4, scheduler)
    assert big["estimated"] == small["estimated"] == 2 * EPOCHS
    assert big["global_step"] == small["global_step"] == 2 * EPOCHS  # optimizer steps
    assert len(small["lrs"]) == 2 * EPOCHS and small["scheduler_steps"] == big["scheduler_steps"] == 2 * EPOCHS
    assert small["lrs"] == pytest.approx(big["lrs"])  # the same lr at every optimizer step: warmup and decay
    assert small["lrs"][0] == pytest.approx(0.001) and max(small["lrs"]) == pytest.approx(0.1)  # 1-epoch warmup = 2 steps
    if name == "cosine":
        assert small["final_lr"] == pytest.approx(0.001)  # decayed to min_lr exactly at the last step


def test_lr_finder_counts_optimizer_steps_under_accumulation(tmp_path):
    from cifar_shared.engine.lr_finder import find_lr

    dm = ImageDataModule(DATA, {"pipeline": "tensor"}, 64, seed=0)
    net = tiny_net()
    net(torch.zeros(1, 3, 32, 32))
    module = ClassificationModule(net, 10, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", default_root_dir=tmp_path)
    cfg = OmegaConf.create({"min_lr": 1e-4, "max_lr": 1.0, "num_steps": 12, "rule": "min_over_10"})
    found = find_lr(trainer, module, dm, cfg, tmp_path / "lr.png")
    assert len(found["lr"]) == len(found["raw_loss"]) == 12  # one point per optimizer step, 48 batches
    assert found["lr"][0] == pytest.approx(1e-4, rel=0.5) and found["lr"][-1] > 0.3
