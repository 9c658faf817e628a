"""Data sources, splits, the batch loader and its augmentations."""

from cifar_shared.data.augment import AugmentPolicy, BatchAugment
from cifar_shared.data.loader import ShardedPermutation, TensorBatchLoader
from cifar_shared.data.sources import ImageSet, load_source, split_train_val

__all__ = [
    "AugmentPolicy",
    "BatchAugment",
    "ImageSet",
    "ShardedPermutation",
    "TensorBatchLoader",
    "load_source",
    "split_train_val",
]
