"""Stride-8 mask logits -> COCO RLEs with the run boundaries found on the device.

The same masks as `RleUpsampler` (`bilinear_resize(logits, (H, W)) > 0`, PyTorch's
align_corners=False), the same idea (a bilinear surface changes sign at most once between two
source rows of an output column, so the column-major run boundaries follow from the small
logit grid without making the full-size mask), but computed for every (output column,
source-row segment) pair at once, as one jitted program, instead of only for the outline:

* columns: C = L @ A, the (w, W) column interpolation matrix (two taps per output column),
  at full float32 precision;
* per column x: a toggle at its first row where the column starts in a state other than the
  one the previous column ended in (the mask starts off); per segment r (output rows reading
  source rows r and r + 1) where C[r, x] and C[r + 1, x] differ in sign: a toggle at the first
  row whose weight w reaches the zero crossing t = C[r] / (C[r] - C[r + 1]) (w >= t turning
  off, w > t turning on). The rows of a segment have weights w0, w0 + h/H, ..., so that row
  is a ceil/floor of (t - w0) H / h. Two toggles at one position (a crossing at the end of a
  segment and one at the start of the next) cancel;
* a second program packs each mask's toggles (cumulative sum, scatter) into run lengths,
  `max_runs` per mask, a power of two the host picks from the masks' toggle counts;
* the host only slices each mask's run lengths and has pycocotools compress them to its
  string form: no per-pixel and no per-pair work on the host. On a CPU, where XLA's scatter
  is slow, the host gathers the toggles into run lengths instead (`host_run_lengths`).

The arithmetic is float32 (the precision PyTorch upsamples the mean logits in on a GPU): a
pixel can differ from a float64 resize only where the interpolated value is within float32
rounding of 0 (tests bound it). Meant for GPUs and TPUs, where the device does this work in
microseconds and the host thread is freed for the next masks. On a CPU, `RleUpsampler`'s
outline path costs less for object-like masks, and this program less for noisy ones, where
`RleUpsampler` would make every pixel (`config.inference.mask_rle` "auto" combines them).

Output sizes at least the grid's in both directions (upsampling, every real video) are
supported: then every segment holds at least one row, so at most two toggles meet at a
position. Smaller outputs use `RleUpsampler`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifc_jax.data.masks import rles_from_runs
from ifc_jax.inference.rle_upsample import run_lengths
from ifc_jax.inference.tracking import bilinear_taps

# Masks per device call: a batch is padded to the next power of two (at least MIN_BATCH) and
# split at MAX_BATCH, so few programs are compiled per output size.
MIN_BATCH = 8
MAX_BATCH = 256
MIN_RUNS = 64  # smallest `max_runs` (run lengths per mask) the packing program is compiled for


def supports(grid_size: tuple[int, int], output_size: tuple[int, int]) -> bool:
    """Whether `DeviceRleEncoder` handles this (grid, output) pair: upsampling in both
    directions."""
    return output_size[0] >= grid_size[0] >= 1 and output_size[1] >= grid_size[1] >= 1


def platform_of(device: jax.Device | None) -> str:
    """The platform ("cpu", "gpu", "tpu") of `device`, or of JAX's default device if None."""
    return device.platform if device is not None else jax.default_backend()


def batch_sizes(count: int) -> list[int]:
    """The device calls `DeviceRleEncoder` splits `count` masks into: `count` rounded up to a
    multiple of MIN_BATCH, as MAX_BATCH at a time and then its binary digits, so that every
    call's size is one of a few powers of two and at most MIN_BATCH - 1 masks (in the last
    call) are padding."""
    padded = -(-count // MIN_BATCH) * MIN_BATCH
    rest = padded % MAX_BATCH
    return [MAX_BATCH] * (padded // MAX_BATCH) + [
        1 << bit for bit in reversed(range(MAX_BATCH.bit_length())) if rest & (1 << bit)]


def _power_of_two_at_least(value: int, smallest: int) -> int:
    return max(smallest, 1 << max(0, int(value) - 1).bit_length())


@functools.lru_cache(maxsize=32)
def _programs(grid_size: tuple[int, int], output_size: tuple[int, int]) -> tuple[Any, Any]:
    """(toggles, pack): the two jitted programs of one (grid, output) size, shared by every
    encoder of that size (one compilation per batch size and device)."""
    grid_h, grid_w = grid_size
    height, width = output_size
    col_low, col_high, col_weight = bilinear_taps(grid_w, width)
    columns = np.zeros((grid_w, width), np.float64)
    np.add.at(columns, (col_low, np.arange(width)), 1.0 - col_weight)
    np.add.at(columns, (col_high, np.arange(width)), col_weight)
    columns = columns.astype(np.float32)
    row_low, _, row_weight = bilinear_taps(grid_h, height)
    # Segment r = the rows reading source rows r and r + 1 (row_low == r), r < h - 1 (the
    # last segment reads row h - 1 alone: no crossing). Rows of weight 0 (the top rows,
    # clamped to source 0; a first row landing exactly on source row r) keep C[r]'s sign, so
    # the search starts at the segment's first row of positive weight, w0, and steps h / H.
    segments = np.arange(grid_h - 1)
    start = np.searchsorted(row_low, segments)
    end = np.searchsorted(row_low, segments + 1)
    positive = row_weight > 0.0
    first = np.array([low + int(np.argmax(positive[low:high])) if positive[low:high].any()
                      else low for low, high in zip(start, end, strict=True)], np.int32)
    first_weight = row_weight[first].astype(np.float32)
    end = end.astype(np.int32)
    rows_per_source = np.float32(height / grid_h)
    size = height * width

    @jax.jit
    def toggles(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
        """logits (n, h, w) float32 -> (positions (n, h, W) int32 of each mask's toggles by
        slot and column, -1 where none; (n,) their counts). Slot 0 is a column's top, slot
        r + 1 its segment r: column-major order is `found.transpose(0, 2, 1)`, left to the
        compaction (XLA:CPU transposes this int32 array several times slower than numpy)."""
        count = logits.shape[0]
        values = jnp.einsum("nhw,wW->nhW", logits, columns,
                            precision=jax.lax.Precision.HIGHEST)  # (n, h, W)
        on = values > 0.0
        ended = jnp.pad(on[:, -1, :-1], ((0, 0), (1, 0)))  # previous column's last row
        column_top = jnp.arange(width, dtype=jnp.int32) * height
        top = jnp.where(on[:, 0] != ended, column_top, -1)  # (n, W)
        upper, lower, upper_on = values[:, :-1], values[:, 1:], on[:, :-1]
        crossing = upper_on != on[:, 1:]
        threshold = upper / jnp.where(crossing, upper - lower, 1.0)
        steps = (threshold - first_weight[:, None]) * rows_per_source
        offset = jnp.where(upper_on, jnp.ceil(steps), jnp.floor(steps) + 1.0)
        offset = jnp.clip(offset, 0.0, (end - first)[:, None].astype(jnp.float32))
        row = first[:, None] + offset.astype(jnp.int32)  # (h - 1, W) per mask
        rows = jnp.where(crossing, column_top + row, -1)  # (n, h - 1, W)
        found = jnp.concatenate([top[:, None], rows], axis=1)  # (n, h, W)
        # Two toggles at one position cancel. Only neighbouring slots of a column can meet (a
        # crossing at the end of a segment and one at the start of the next): a column's
        # positions lie below the next column's top.
        below = jnp.full_like(found[:, :1], -2)
        following = jnp.concatenate([found[:, 1:], below], axis=1)
        preceding = jnp.concatenate([below, found[:, :-1]], axis=1)
        found = jnp.where((found >= 0) & ((found == following) | (found == preceding)), -1,
                          found)
        return found, jnp.sum((found >= 0).reshape(count, -1), axis=1, dtype=jnp.int32)

    @functools.partial(jax.jit, static_argnames=("max_runs",))
    def pack(found: jax.Array, max_runs: int) -> jax.Array:
        """(n, h, W) toggle positions -> (n, max_runs) uint32 run lengths: off, on, off, ...
        from the top of the first column; the run after the last toggle, then zeros."""
        count = found.shape[0]
        found = found.transpose(0, 2, 1).reshape(count, -1)  # column-major
        present = found >= 0
        rank = jnp.cumsum(present, axis=1, dtype=jnp.int32) - 1
        slot = jnp.where(present, rank, max_runs)  # out of bounds: dropped
        positions = jnp.full((count, max_runs), size, jnp.int32)
        positions = positions.at[jnp.arange(count)[:, None], slot].set(found, mode="drop")
        return jnp.diff(positions, axis=1, prepend=0).astype(jnp.uint32)

    return toggles, pack


def host_run_lengths(found: np.ndarray, toggle_counts: np.ndarray, size: int
                     ) -> list[np.ndarray]:
    """`toggles`' output (n, h, W) and counts (n,) -> each mask's run lengths (uint32: off,
    on, ... from the top of the first column, the run after its last toggle last), on the
    host: on a CPU this costs a fraction of `pack`'s scatter."""
    flat = np.ascontiguousarray(found.transpose(0, 2, 1)).reshape(-1)  # column-major
    # np.compress: several times faster than boolean indexing (flat[flat >= 0]) in numpy.
    return run_lengths(np.compress(flat >= 0, flat), toggle_counts, size)


class DeviceRleEncoder:
    """Thresholded bilinear upsampling of (h, w) logit grids to (H, W) RLEs, the run
    boundaries computed on `device` (default: JAX's default device). Same interface as
    `RleUpsampler`; requires `supports(grid_size, output_size)`."""

    def __init__(self, grid_size: tuple[int, int], output_size: tuple[int, int],
                 device: jax.Device | None = None, compact_on_host: bool | None = None):
        """`compact_on_host`: whether the host gathers each mask's toggles into run lengths
        (`host_run_lengths`) instead of the device's `pack` program; None: on a CPU only."""
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.output_size = (int(output_size[0]), int(output_size[1]))
        if not supports(self.grid_size, self.output_size):
            raise ValueError(f"output {output_size} smaller than the grid {grid_size} (or "
                             "empty): use RleUpsampler")
        self.device = device
        self._toggles, self._pack = _programs(self.grid_size, self.output_size)
        self.compact_on_host = (platform_of(device) == "cpu" if compact_on_host is None
                                else compact_on_host)

    def __call__(self, logits: np.ndarray) -> list[dict]:
        """RLEs of n masks: logits (n, h, w) -> n {"size": [H, W], "counts": str}."""
        logits = np.asarray(logits)
        if logits.ndim != 3 or logits.shape[1:] != self.grid_size:
            raise ValueError(f"expected (n, {self.grid_size[0]}, {self.grid_size[1]}) logits, "
                             f"got {logits.shape}")
        # Every batch's device call first, then the host's part of each in turn: the device
        # finds the next batch's run boundaries while the host compresses this one's.
        calls = []
        first = 0
        for batch in batch_sizes(len(logits)):
            part = logits[first:first + batch]
            calls.append((len(part), self._dispatch(part, batch)))
            first += batch
        return [rle for count, call in calls for rle in self._finish(count, *call)]

    def _dispatch(self, logits: np.ndarray, batch: int) -> tuple[jax.Array, jax.Array]:
        """Dispatches `toggles` on n <= batch masks, run as one call of `batch` (the rest
        all-off padding): (positions, counts), not awaited."""
        padded = np.zeros((batch, *self.grid_size), np.float32)  # extra masks: all off
        padded[:len(logits)] = logits  # the one float32 copy of the caller's logits
        # With no device of its own the array goes to the program as it is: jit's own
        # placement on the default device costs less than a device_put.
        return self._toggles(padded if self.device is None
                             else jax.device_put(padded, self.device))

    def _finish(self, count: int, found: jax.Array, toggle_counts: jax.Array) -> list[dict]:
        """The RLEs of the first `count` masks of a `_dispatch`ed call."""
        height, width = self.output_size
        toggle_counts = np.asarray(toggle_counts)[:count]
        if self.compact_on_host:
            counts = host_run_lengths(np.asarray(found)[:count], toggle_counts, height * width)
        else:
            max_runs = _power_of_two_at_least(int(toggle_counts.max(initial=0)) + 1, MIN_RUNS)
            runs = np.asarray(self._pack(found, max_runs=max_runs))
            counts = [runs[index, :toggles + 1]
                      for index, toggles in enumerate(toggle_counts.tolist())]
        return rles_from_runs(counts, height, width)
