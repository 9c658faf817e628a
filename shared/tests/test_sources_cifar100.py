"""The real CIFAR-100 subset beside the repo (skipped when absent): the CIFAR-100 twin of
test_sources.py's real-subset check. Counts, fine labels and class names against the pickles' own
record and the subset's README, so a loader reading coarse labels, the wrong names or a wrong
pixel layout fails here."""

import pickle

import numpy as np
import pytest
import torch

from cifar_shared.data.sources import load_cifar
from cifar_shared.testing import real_subset_or_skip


@pytest.fixture(scope="module")
def cifar100_subset():
    root = real_subset_or_skip("cifar100-subset")
    return root, *load_cifar("cifar100", root, download=False)


def raw(root, name: str) -> dict:
    with open(root / "cifar-100-python" / name, "rb") as f:  # our own test data: plain pickle is fine here
        return pickle.load(f, encoding="latin1")


def test_counts_and_layout(cifar100_subset):
    _, train, test = cifar100_subset
    assert (len(train), len(test)) == (10_000, 5_000)
    assert train.images.shape == (10_000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test.images.shape == (5_000, 3, 32, 32)


def test_fine_labels_100_per_class(cifar100_subset):
    root, train, test = cifar100_subset
    assert torch.equal(torch.bincount(train.labels, minlength=100), torch.full((100,), 100))
    assert int(test.labels.min()) == 0 and int(test.labels.max()) == 99
    assert (torch.bincount(test.labels, minlength=100) > 0).all()  # every class is tested (about 50 each)
    # the fine labels, not the coarse ones (20 superclasses)
    assert train.labels.tolist() == raw(root, "train")["fine_labels"]
    assert test.labels.tolist() == raw(root, "test")["fine_labels"]


def test_class_names_from_meta(cifar100_subset):
    root, train, test = cifar100_subset
    assert len(train.classes) == 100 and train.classes == test.classes
    assert train.classes == raw(root, "meta")["fine_label_names"]
    assert (train.classes[0], train.classes[1], train.classes[-1]) == ("apple", "aquarium_fish", "worm")


def test_pixels_decode_channel_first(cifar100_subset):
    root, train, _ = cifar100_subset
    rows = np.asarray(raw(root, "train")["data"][:3])  # 1024 red, 1024 green, 1024 blue per image
    assert torch.equal(train.images[:3], torch.from_numpy(rows.reshape(3, 3, 32, 32)))
    mean = train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.5062, 0.4861, 0.4415]), atol=5e-4)  # the subset README's figures
