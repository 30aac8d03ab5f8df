"""Which video each training clip comes from, and its random stream, from (seed, epoch).

The train stream of a process is an endless sequence of clip numbers 0, 1, 2, ...
  * epoch e shuffles all N videos with a permutation drawn from (seed, e);
  * process p of P takes every P-th entry of that permutation, starting at p, and the first
    N // P of them (so every process has the same number of clips per epoch; the up to P-1
    left-over videos differ from epoch to epoch);
  * the clip of video v in epoch e draws its frames / short side / flip from a generator
    seeded with (seed, e, v).
So a clip depends only on (seed, epoch, video), never on the process count, the thread that
built it, or how far the stream was read before: resuming at clip k reproduces the stream.
No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ifc_jax.io import UserError


@dataclasses.dataclass(frozen=True)
class TrainSchedule:
    num_videos: int
    seed: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} not in "
                             f"[0, {self.process_count})")
        if self.num_videos == 0:
            raise UserError("the training split has no videos")
        if self.num_videos < self.process_count:
            raise UserError(f"the training split has {self.num_videos} videos, fewer than the "
                            f"{self.process_count} processes that share it")

    @property
    def clips_per_epoch(self) -> int:
        """Clips one process yields per epoch."""
        return self.num_videos // self.process_count

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The video positions process `process_index` visits in `epoch`, int (clips_per_epoch,)."""
        return _shard(self.num_videos, self.seed, epoch, self.process_index,
                      self.process_count)

    def locate(self, clip_number: int) -> tuple[int, int]:
        """(epoch, video position in the dataset) of the clip_number-th clip of this process."""
        epoch, offset = divmod(int(clip_number), self.clips_per_epoch)
        return epoch, int(self.epoch_order(epoch)[offset])

    def clip_rng(self, epoch: int, video_position: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, video_position])


@functools.lru_cache(maxsize=8)
def _shard(num_videos: int, seed: int, epoch: int, process_index: int,
           process_count: int) -> np.ndarray:
    permutation = np.random.default_rng([seed, epoch]).permutation(num_videos)
    order = permutation[process_index::process_count][: num_videos // process_count]
    order.setflags(write=False)
    return order
