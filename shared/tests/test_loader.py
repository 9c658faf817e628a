import pytest
import torch
import torch.multiprocessing as mp

from cifar_shared.data import AugmentPolicy, BatchAugment, ShardedPermutation, TensorBatchLoader
from cifar_shared.data.sources import make_synthetic
from cifar_shared.testing import gloo_shard_worker


def test_sharded_permutation_splits_each_epoch_between_ranks():
    shards = [ShardedPermutation(103, seed=7, rank=r, world_size=4) for r in range(4)]
    for s in shards:
        s.set_epoch(3)
    seen = torch.cat([s.indices() for s in shards])
    assert all(len(s.indices()) == len(s) == 26 for s in shards)
    assert set(seen.tolist()) == set(range(103))  # every sample once, 1 padded duplicate
    assert len(seen) - len(set(seen.tolist())) == 1


def test_evaluation_shards_cover_every_image_exactly_once():
    shards = [ShardedPermutation(103, rank=r, world_size=4, shuffle=False) for r in range(4)]
    seen = torch.cat([s.indices() for s in shards])
    assert sorted(seen.tolist()) == list(range(103))  # no padded duplicate: test metrics count each image once
    assert [len(s) for s in shards] == [len(s.indices()) for s in shards] == [26, 26, 26, 25]


def test_permutation_is_seeded_per_epoch():
    a, b = ShardedPermutation(50, seed=1), ShardedPermutation(50, seed=1)
    assert torch.equal(a.indices(), b.indices())
    first = a.indices()
    a.set_epoch(1)
    assert not torch.equal(first, a.indices())
    assert torch.equal(ShardedPermutation(5, shuffle=False).indices(), torch.arange(5))


def _loader(data, batch, augment=None, seed=0, drop_last=False):
    return TensorBatchLoader(data.images, data.labels, batch, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3],
                             ShardedPermutation(len(data), seed, shuffle=augment is not None), augment, drop_last)


def test_batches_are_normalized_by_formula_without_augmentation():
    data, _ = make_synthetic(4, 70, 4, 16, seed=0)
    loader = _loader(data, 32)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [32, 32, 6]
    x = torch.cat([b[0] for b in batches])
    expected = (data.images.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x, expected, atol=1e-6)
    assert torch.equal(torch.cat([b[1] for b in batches]), data.labels)
    assert len(_loader(data, 32, drop_last=True)) == 2


def test_augmented_batches_repeat_for_a_seed_and_epoch():
    data, _ = make_synthetic(4, 64, 4, 16, seed=0)
    aug = BatchAugment(AugmentPolicy(crop_padding=2, flip=True, cutout=4))
    run = lambda seed, epoch: [x for x, _ in (_set(_loader(data, 16, aug, seed), epoch))]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(run(0, 0), run(0, 0)))
    assert not torch.equal(run(0, 0)[0], run(0, 1)[0])
    assert not torch.equal(run(0, 0)[0], run(1, 0)[0])


def _set(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return loader


@pytest.mark.slow  # two processes with a gloo group
def test_two_gloo_processes_see_disjoint_shards():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=gloo_shard_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    shards = out.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    a, b = map(set, shards)
    assert len(shards[0]) == len(shards[1]) == 45
    assert a.isdisjoint(b) and a | b == set(range(90))
