import pytest
import torch

from cifar_shared.data import AugmentPolicy, BatchAugment, ShardedPermutation, TensorBatchLoader
from cifar_shared.data.augment import AffinePolicy
from cifar_shared.data.per_sample import (
    albumentations_transform,
    per_sample_loader,
    per_sample_transform,
)
from cifar_shared.data.sources import make_synthetic

MEAN, STD = [0.45, 0.46, 0.47], [0.27, 0.26, 0.28]
POLICY = AugmentPolicy(crop_padding=4, flip=True, cutout=16, cutout_p=0.5, affine=AffinePolicy())


def _batches(kind, data, n=4):
    sampler = ShardedPermutation(len(data), seed=0)
    if kind == "tensor":
        loader = TensorBatchLoader(data.images, data.labels, 64, MEAN, STD, sampler, BatchAugment(POLICY))
    else:
        loader = per_sample_loader(data.images, data.labels, albumentations_transform(POLICY, MEAN, STD, 32, seed=0), 64, sampler, num_workers=0)
    return [b for _, b in zip(range(n), loader)]


def test_both_pipelines_give_the_same_batch_contract_and_pixel_statistics():
    data, _ = make_synthetic(10, 512, 10, 32, seed=0)
    tensor, per_sample = _batches("tensor", data), _batches("per_sample", data)
    for (xt, yt), (xp, yp) in zip(tensor, per_sample):
        assert xt.shape == xp.shape == (64, 3, 32, 32)
        assert xt.dtype == xp.dtype == torch.float32 and yt.dtype == yp.dtype == torch.int64
        assert torch.equal(yt, yp)  # same sampler, same order
    xt = torch.cat([x for x, _ in tensor])
    xp = torch.cat([x for x, _ in per_sample])
    for dims in ((0, 2, 3),):
        assert torch.allclose(xt.mean(dims), xp.mean(dims), atol=0.08)
        assert torch.allclose(xt.std(dims), xp.std(dims), rtol=0.08)
    zero = -torch.tensor(MEAN) / torch.tensor(STD)  # black padding after normalization
    frac_black_t = (xt == zero.view(1, 3, 1, 1)).all(1).float().mean()
    frac_black_p = (xp - zero.view(1, 3, 1, 1)).abs().lt(1e-3).all(1).float().mean()
    assert abs(frac_black_t - frac_black_p) < 0.05


RANDAUG = AugmentPolicy(crop_padding=4, flip=True, num_ops=2, magnitude=9)  # torchvision; POLICY: albumentations


@pytest.mark.parametrize("policy", [RANDAUG, POLICY], ids=["torchvision", "albumentations"])
def test_a_per_sample_epoch_depends_only_on_the_seed_and_the_epoch(policy):
    """What a resumed run relies on: epoch 2 augments alike whether or not this loader (its workers,
    the process's RNG) went through epoch 1 first, with any number of workers, even when the
    iterator is built before the epoch is set; the training process's RNG is left as it was."""
    data, _ = make_synthetic(10, 96, 10, 32, seed=0)

    def epoch(loader, n):
        batches = iter(loader)  # as Lightning does: the iterator first, then the epoch
        loader.sampler.set_epoch(n)
        return [x for x, _ in batches]

    def loader(workers):
        transform = per_sample_transform(policy, MEAN, STD, 32, seed=0)
        return per_sample_loader(data.images, data.labels, transform, 32, ShardedPermutation(len(data), seed=3), num_workers=workers)

    unbroken = loader(0)
    torch.manual_seed(0)
    epoch(unbroken, 0)
    state = torch.get_rng_state()
    second = epoch(unbroken, 1)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)  # a resumed process: fresh loader, other RNG state
    assert all(torch.equal(a, b) for a, b in zip(second, epoch(loader(0), 1), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(second, epoch(loader(2), 1), strict=True))
