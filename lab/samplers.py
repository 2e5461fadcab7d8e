"""Which clips make each training step's batch: a pure function of (seed, step) (`StepSampler`), or rows that
each continue one stream's drive from step to step (`StreamSampler`, streaming training)."""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import numpy as np
import torch


class StepSampler(torch.utils.data.Sampler):
    """Batches for steps start_step .. steps-1; step s holds positions s*B .. s*B+B-1 of an endless
    stream of epochs, each a permutation of the dataset seeded by (seed, epoch). Items are
    `(index, epoch, item_seed)` so the dataset can draw clip drops and augmentation deterministically."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int = 0, start_step: int = 0, shuffle: bool = True):
        if n < 1:
            raise ValueError("StepSampler: the dataset is empty")
        self.n, self.batch_size, self.steps, self.seed, self.start_step, self.shuffle = n, batch_size, steps, seed, start_step, shuffle
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.n) if self.shuffle else np.arange(self.n)}
        return self._perms[epoch]

    def batch(self, step: int) -> list[tuple[int, int, int]]:
        out = []
        for k in range(self.batch_size):
            pos = step * self.batch_size + k
            epoch, within = divmod(pos, self.n)
            out.append((int(self._perm(epoch)[within]), epoch, _item_seed(self.seed, pos)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start_step, self.steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)


def _item_seed(seed: int, position: int) -> int:
    return int(np.random.default_rng((seed, position, 7919)).integers(2**31 - 1))


class StreamItem(NamedTuple):
    """One row of a streaming batch: a clip, the seed of its whole drive (augmentation stays the same
    along a drive, or the carried state would see the world jump), and whether it continues the row's
    previous clip (False: its first frame starts a fresh state)."""

    clip: Any  # replay.clips.Clip
    seed: int
    continues: bool


class StreamSampler(torch.utils.data.Sampler):
    """Batches of B parallel streams for steps start_step .. steps-1. Stream b walks every scene once per
    epoch, in an order seeded by (seed, epoch, b); each walk is `index.walk_clips(scene, (seed, epoch, b))`,
    consecutive clips of one drive. Step s gives each stream its s-th clip, so batches are a pure function
    of (seed, s) and a resumed run continues the same drives."""

    def __init__(self, index, batch_size: int, steps: int, seed: int = 0, start_step: int = 0):
        self.index, self.batch_size, self.steps, self.seed, self.start_step = index, batch_size, steps, seed, start_step
        self._epoch_lengths: dict[int, list[int]] = {b: [] for b in range(batch_size)}
        self._cache: dict[int, tuple[int, list[StreamItem]]] = {}  # stream -> (epoch, its items)
        if not self._epoch_items(0, 0):
            raise ValueError("StreamSampler: no scene is long enough for one clip")

    def _epoch_items(self, stream: int, epoch: int) -> list[StreamItem]:
        cached = self._cache.get(stream)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        key = (self.seed, epoch, stream)
        items = []
        for scene in np.random.default_rng((*key, 1)).permutation(len(self.index.scenes)):
            walk_seed = int(np.random.default_rng((*key, int(scene), 7919)).integers(2**31 - 1))
            clips = self.index.walk_clips(int(scene), key)
            items.extend(StreamItem(c, walk_seed, k > 0) for k, c in enumerate(clips))
        self._cache[stream] = (epoch, items)
        return items

    def item(self, stream: int, position: int) -> StreamItem:
        """The position-th clip (0-based) of a stream."""
        lengths = self._epoch_lengths[stream]
        epoch = 0
        while True:
            if epoch == len(lengths):
                lengths.append(len(self._epoch_items(stream, epoch)))
            if position < lengths[epoch]:
                return self._epoch_items(stream, epoch)[position]
            position -= lengths[epoch]
            epoch += 1

    def batch(self, step: int) -> list[StreamItem]:
        return [self.item(b, step) for b in range(self.batch_size)]

    def __iter__(self) -> Iterator[list[StreamItem]]:
        for step in range(self.start_step, self.steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)
