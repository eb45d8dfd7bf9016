"""Data loading for fine-tuning that resumes *exactly* mid-epoch and shards through Lightning's DDP.

Three small pieces make a killed run continue as if never stopped:

* :class:`KeyedSampler` (a ``DistributedSampler``: epoch-seeded shuffle, one shard per rank) yields keys
  ``epoch * N + index``, so every draw of an image has its own identity;
* :class:`KeyedDataset` seeds the augmentation from ``(seed, key)`` in a private RNG, so an image's
  augmentation depends on neither the worker nor the history of the global RNG (which stays for dropout);
* :class:`ResumableLoader` tells Lightning how many batches it served (``state_dict``), which Lightning
  stores in ``last.ckpt`` and gives back on resume; the sampler then skips them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from birdlens.train.features import seeded_call


def key_seed(seed: int, key: int) -> int:
    h = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class KeyedDataset(Dataset[tuple[Any, int]]):
    """Wraps a dataset returning ``(untransformed image, target)``; item ``key`` is image ``key % N`` with
    ``transform`` drawn from an RNG seeded by ``(seed, key)``."""

    def __init__(
        self, base: Dataset[tuple[Any, int]], transform: Callable[[Any], Any] | None, seed: int
    ) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int) -> tuple[Any, int]:
        img, target = self.base[key % len(self)]
        if self.transform is not None:
            img = seeded_call(self.transform, img, key_seed(self.seed, key))
        return img, target


class KeyedSampler(DistributedSampler):  # type: ignore[type-arg]
    """Epoch-seeded shuffled shard of ``range(N)`` as keys ``epoch * N + i``; can skip a resumed prefix once."""

    def __init__(
        self, dataset: Dataset[Any], num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip)
        self.skipped = 0

    def resume_at(self, epoch: int, samples: int) -> None:
        self._resume = (epoch, samples)

    def __iter__(self) -> Iterator[int]:
        idx = list(super().__iter__())
        self.skipped = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            self.skipped = min(self._resume[1], len(idx))
            idx = idx[self.skipped :]
        self._resume = None
        n = len(self.dataset)  # type: ignore[arg-type]
        return iter([self.epoch * n + i for i in idx])


class ResumableLoader(DataLoader):  # type: ignore[type-arg]
    """A DataLoader with ``state_dict``/``load_state_dict`` (Lightning's resumable-loader protocol)."""

    def __init__(self, dataset: KeyedDataset, sampler: KeyedSampler, batch_size: int, **kw: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kw)
        self._batches = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        inner = super().__iter__()

        def gen() -> Iterator[Any]:
            for i, batch in enumerate(inner):
                if i == 0:  # the sampler has run by now and knows what it skipped
                    self._batches = self.sampler.skipped // self.batch_size  # type: ignore[attr-defined,operator]
                self._batches += 1
                yield batch

        return gen()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self._batches)}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(int(state["epoch"]), int(state["batches"]) * int(self.batch_size))  # type: ignore[attr-defined,arg-type]


def plain_loader(dataset: Dataset[Any], batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:  # type: ignore[type-arg]
    """Evaluation loader: in order, and with its own generator so creating it never touches the global RNG."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )
