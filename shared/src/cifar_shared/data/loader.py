"""The fast path: the whole split lives on the training device and batches are made with tensor ops.

Under DDP each rank draws the same seeded permutation of the epoch and keeps its own slice, like
``DistributedSampler``, so ranks never train on duplicated data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from cifar_shared.data.augment import BatchAugment


class ShardedPermutation:
    """Indices for one rank: epoch-seeded permutation, sliced by rank.

    Training shards (``shuffle=True``) are padded by wrapping around so every rank runs the same
    number of steps (DDP's gradient all-reduce needs it); evaluation shards are not padded, so the
    ranks together see every validation/test image exactly once and the metrics count each once.
    Lightning calls ``set_epoch`` on ``loader.sampler`` before each training epoch, which keeps the
    order of a resumed run identical to an uninterrupted one.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.size, self.seed, self.shuffle, self.rank, self.world_size = size, seed, shuffle, rank, world_size
        self.epoch = 0
        self.per_rank = math.ceil(size / world_size) if shuffle else len(range(rank, size, world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        if not self.shuffle:
            return order[self.rank :: self.world_size]
        total = self.per_rank * self.world_size
        if total > self.size:  # wrap around so every rank gets the same number of steps
            order = torch.cat([order, order[: total - self.size]])
        return order[self.rank : total : self.world_size]

    def __len__(self) -> int:
        return self.per_rank


class TensorBatchLoader:
    """Iterates (images, labels) batches on the device: uint8 gather -> crop/flip -> float -> normalize."""

    batch_sampler = None  # Lightning inspects DataLoader-like attributes; ``sampler`` gets set_epoch

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        sampler: ShardedPermutation,
        augment: BatchAugment | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ):
        self.device = torch.device(device)
        pad = augment.pad if augment is not None else 0
        self.images = F.pad(images, (pad,) * 4).to(self.device)  # padded once, not per batch
        self.labels = labels.to(self.device)
        self.batch_size, self.sampler, self.augment, self.drop_last = batch_size, sampler, augment, drop_last
        # normalize((x / 255 - mean) / std) as one multiply-add
        self.scale = (1 / (255 * torch.tensor(std))).view(1, -1, 1, 1).to(self.device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1).to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.position = 0  # batches handed out in the current pass
        self._resume_at: tuple[int, int] | None = None  # (epoch, batch) a checkpoint asked to start from

    def state_dict(self) -> dict:
        """Where the epoch stands; Lightning saves it in mid-epoch checkpoints (the permutation and
        the augmentation draws are functions of (seed, epoch), so the position is all it needs)."""
        return {"epoch": self.sampler.epoch, "batch": self.position, "seed": self.sampler.seed, "size": self.sampler.size}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("seed"), state.get("size")) != (self.sampler.seed, self.sampler.size):
            raise ValueError(f"loader state from another data/seed ({state}); cannot resume mid-epoch")
        self._resume_at = (int(state["epoch"]), int(state["batch"]))

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = self.sampler
        g = torch.Generator(device=self.device).manual_seed((s.seed + 1) * 1_000_003 + s.epoch * 7919 + s.rank)
        order = s.indices().to(self.device)
        skip, self._resume_at = (self._resume_at[1] if self._resume_at and self._resume_at[0] == s.epoch else 0), None
        self.position = 0
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx]
            if self.augment is None:
                x = torch.addcmul(self.shift, x.float(), self.scale)
            else:  # skipped batches are augmented too: that advances ``g`` exactly as the first pass did
                x = self.augment.on_float(self.augment.on_uint8(x, g).float(), g)
                x = self.augment.on_normalized(torch.addcmul(self.shift, x, self.scale), g)
            self.position += 1
            if self.position <= skip:
                continue
            yield x.contiguous(memory_format=self.memory_format), self.labels[idx]
