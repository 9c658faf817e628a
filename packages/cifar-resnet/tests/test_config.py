import pytest
import torch
from hydra.utils import instantiate

from cifar_shared.engine.cli import compose_config


def test_defaults_of_the_original_project():
    cfg = compose_config("cifar_resnet.conf", [])
    assert cfg.name == "resnet" and cfg.seed == 42 and cfg.batch_size == 64 and cfg.trainer.max_epochs == 50
    assert cfg.data.name == "cifar100"
    assert list(cfg.data.mean) == [0.50736207, 0.4866896, 0.44108862] and list(cfg.data.std) == [0.26748818, 0.2565931, 0.2763085]
    assert cfg.model.arch == "resnet18" and cfg.model.stem == "cifar"
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.optim.lr == 0.1
    assert cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1e-4
    sched = cfg.scheduler
    assert sched._target_.endswith("onecycle") and sched.max_lr is None  # peak = lr, or the LR finder's pick
    assert (sched.pct_start, sched.anneal_strategy, sched.div_factor, sched.final_div_factor) == (0.2, "cos", 100, 1000)
    aug = cfg.augment
    assert aug.flip is True and aug.crop_padding == 0 and (aug.cutout, aug.cutout_p) == (16, 0.5)
    assert dict(aug.affine) == {"translate": 0.0625, "scale": 0.1, "degrees": 45, "p": 0.5}
    assert cfg.lr_find.enabled is False


def test_onecycle_follows_the_original_schedule():
    cfg = compose_config("cifar_resnet.conf", [])
    opt = instantiate(cfg.optim)(params=[torch.zeros(1, requires_grad=True)])
    sched = instantiate(cfg.scheduler)(opt, total_steps=100, steps_per_epoch=10)["scheduler"]
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 / 100)
    assert max(lrs) == pytest.approx(0.1, rel=1e-3) and lrs.index(max(lrs)) == 19  # 20 % warm-up
    assert lrs[-1] == pytest.approx(0.1 / 100 / 1000, rel=0.05)


def test_experiment_swaps_data_and_keeps_the_policy():
    cfg = compose_config("cifar_resnet.conf", ["experiment=subset"])
    assert cfg.data.name == "cifar10" and cfg.data.root == "../shared/data/cifar10-subset" and cfg.data.download is False
    assert cfg.trainer.max_epochs == 3 and cfg.optim._target_ == "torch.optim.SGD" and cfg.augment.affine.degrees == 45


def test_groups_and_keys_swap_from_the_command_line():
    cfg = compose_config("cifar_resnet.conf", ["model=resnet50", "model.stem=imagenet", "scheduler=cosine", "optim=adam", "lr=0.001", "augment.pipeline=per_sample"])
    assert cfg.model.arch == "resnet50" and cfg.model.stem == "imagenet"
    assert set(cfg.scheduler) == {"_target_", "_partial_", "warmup_epochs", "min_lr"}  # no OneCycle leftovers
    assert cfg.optim._target_ == "torch.optim.Adam" and cfg.optim.lr == 0.001 and cfg.augment.pipeline == "per_sample"
