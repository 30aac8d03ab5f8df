"""Stride-8 mask logits -> COCO RLEs at the original video size, without full-size masks.

The masks IFC writes are `bilinear_resize(logits, (H, W)) > 0` (PyTorch's F.interpolate,
align_corners=False; `tracking.bilinear_taps`). Making each (H, W) mask and run-length
encoding it touches every output pixel twice: at 720x1280 that is 0.9 M pixels per track and
frame, far more host time than the model's own work on a GPU. The mask is fully determined
by where the interpolated surface crosses zero, and a bilinear surface is simple enough to find
those crossings exactly from the small logit grid:

* Bilinear resizing is separable. Output column x reads source columns lo(x), hi(x) with
  weight u(x); C[r, x] = L[r, lo] (1 - u) + L[r, hi] u is the column interpolated at source
  row r. Output row y reads source rows r(y), r(y) + 1 with weight w(y), and w grows with y
  while r(y) stays the same ("segment r"). On segment r the value C[r] (1 - w) + C[r+1] w is
  linear in w, so it changes sign at most once: at w = C[r] / (C[r] - C[r+1]), found among
  the segment's rows by a binary search.
* C[r, x] and C[r+1, x] can only differ in sign if the four logits L[r..r+1, lo..hi] do not
  all share a sign. Only those grid cells (the mask's outline, a few percent of the grid) are
  expanded to output columns; everywhere else a column keeps its sign over whole segments.
* Down a column (COCO RLEs run column-major) the mask is on at row 0 iff C[0, x] > 0, and
  toggles at every crossing. The toggles of all columns, in column-major order, are the run
  boundaries; pycocotools compresses the counts to its string form.

Cost: O(h x w + W + outline x W / w) per mask instead of O(H x W). When the outline is most
of the grid (noisy logits, small outputs), the toggles outnumber what a full mask costs; such
batches take the dense path instead: the interpolated columns times the (h, H) row
interpolation matrix (BLAS products, two non-zero taps per row) give the (W, H) surface,
thresholded, and pycocotools' C encoder run-length encodes it. A batch takes the path its
estimated cost favours (`choose_dense`). Given a `dense_encoder` (`mask_rle` "auto" on a CPU:
the jitted `DeviceRleEncoder`, float32), the dense batches go to it instead, and the choice
weighs its own, much lower, cost: at 720x1280 a batch of noisy masks costs it a quarter of
the outline path's time, where the numpy dense path would cost more than either.

All arithmetic is float64 on the float32 logits, as `tracking.bilinear_resize`; a pixel can
differ from that reference only where the interpolated value is within float64 rounding of 0
(tests bound it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pycocotools import mask as mask_util

from ifc_jax.data.masks import json_rles, rles_from_runs
from ifc_jax.inference.tracking import bilinear_taps

# Estimated host time (ns, fitted to measurements on a CPU; only their ratios decide) of the
# outline path: a fixed part per batch plus a part per expanded (outline cell, output column)
# pair; and of the dense path: per output pixel, plus per output pixel and source row (the
# length of the row interpolation's product).
OUTLINE_BATCH_COST = 150_000.0
OUTLINE_COST = 80.0
PIXEL_COST = 1.0
PIXEL_ROW_COST = 0.07
# Given a `dense_encoder` (the device program run by XLA on the CPU), its time instead of the
# dense path's: per batch, per (mask, source row, output column) element of its interpolated
# columns, and per expanded outline pair (about the toggles it compacts and compresses).
# Fitted on 8- and 80-mask batches at 128x224, 180x320 and 720x1280: the two paths cost the
# same where about a tenth of the grid cells are mixed; trained models' masks stay well below
# (the toy demo's batches: at most 6 %), noisy ones far above.
ENCODER_BATCH_COST = 200_000.0
ENCODER_ELEMENT_COST = 7.0
ENCODER_PAIR_COST = 8.0
# Output pixels per step of the dense path (its float64 surface: 2 MB).
DENSE_CHUNK_PIXELS = 1 << 18
# Multiply-adds per BLAS product of the dense path. OpenBLAS runs products up to this size on
# the calling thread; larger ones it spreads over its own threads, which on the RLE thread
# pool, beside XLA's threads, oversubscribe the cores (measured: twice the time).
BLAS_SINGLE_THREAD_WORK = 1 << 18


def run_lengths(positions: np.ndarray, toggle_counts: np.ndarray, size: int
                ) -> list[np.ndarray]:
    """Run lengths of n masks of `size` pixels from their toggle positions: `positions` holds
    each mask's in ascending order, mask after mask, `toggle_counts` (n,) how many are each
    mask's. Returns each mask's uint32 run lengths (off, on, ... from the first pixel, the run
    after its last toggle last), as views into one array: no per-mask arithmetic."""
    ends = np.cumsum(toggle_counts)
    bounded = np.insert(positions, ends, size)  # each mask's toggles, then its end
    runs = np.empty_like(bounded)
    np.subtract(bounded[1:], bounded[:-1], out=runs[1:])
    starts = ends - toggle_counts + np.arange(len(ends))  # each mask's first run
    runs[starts] = bounded[starts]
    # Positions below 2**31 (every output size): int32 reads as uint32 as it is.
    runs = runs.view(np.uint32) if runs.itemsize == 4 else runs.astype(np.uint32)
    # Slices rather than np.split, whose per-piece overhead outweighed the arithmetic.
    return [runs[first:first + toggles + 1]
            for first, toggles in zip(starts.tolist(), toggle_counts.tolist(), strict=True)]


class RleUpsampler:
    """Thresholded bilinear upsampling of (h, w) logit grids to (H, W) RLEs.

    One instance per (grid size, output size): the interpolation taps are computed once.
    """

    def __init__(self, grid_size: tuple[int, int], output_size: tuple[int, int],
                 dense_encoder: Callable[[np.ndarray], list[dict]] | None = None):
        """`dense_encoder`, if given, encodes the batches the dense path would take (logits
        (n, h, w) -> RLEs) instead: on a CPU the device's `DeviceRleEncoder`, several
        times cheaper for noisy masks than numpy's surface and pycocotools' pixel scan."""
        self.dense_encoder = dense_encoder
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.output_size = (int(output_size[0]), int(output_size[1]))
        grid_h, grid_w = self.grid_size
        height, width = self.output_size
        if min(grid_h, grid_w, height, width) < 1:
            raise ValueError(f"empty grid {grid_size} or output {output_size}")
        self._col_low, self._col_high, self._col_weight = bilinear_taps(grid_w, width)
        self._col_rest = 1.0 - self._col_weight  # the low tap's weight
        row_low, row_high, row_weight = bilinear_taps(grid_h, height)
        # Rows of segment r (row_low == r) are keys[start[r]:start[r + 1]]; 2 r + w keeps the
        # keys of all segments in one ascending array (w < 1).
        self._row_keys = 2.0 * row_low + row_weight
        self._segment_start = np.searchsorted(row_low, np.arange(grid_h + 1))
        self._padded_keys = np.append(self._row_keys, np.inf)
        self._rows_per_source = height / grid_h
        # Output columns reading source column c as their low tap: [col_start[c], col_start[c+1]).
        self._col_start = np.searchsorted(self._col_low, np.arange(grid_w + 1))
        # The dense path's (h, H) row interpolation: column y holds 1 - w(y) at row_low(y) and
        # w(y) at row_high(y) (summed where the two coincide, at the border).
        self._row_matrix = np.zeros((grid_h, height))
        np.add.at(self._row_matrix, (row_low, np.arange(height)), 1.0 - row_weight)
        np.add.at(self._row_matrix, (row_high, np.arange(height)), row_weight)

    def __call__(self, logits: np.ndarray) -> list[dict]:
        """RLEs of n masks: logits (n, h, w) -> n {"size": [H, W], "counts": str} (JSON-ready,
        the same strings `ifc_jax.data.masks.encode_rle` gives for the thresholded mask)."""
        logits = np.asarray(logits)
        if logits.ndim != 3 or logits.shape[1:] != self.grid_size:
            raise ValueError(f"expected (n, {self.grid_size[0]}, {self.grid_size[1]}) logits, "
                             f"got {logits.shape}")
        if len(logits) == 0:
            return []
        values = logits.astype(np.float64)
        mixed = self._outline_cells(values)
        if self.choose_dense(mixed):
            if self.dense_encoder is not None:
                return self.dense_encoder(logits)
            return self._dense_rles(values)
        return rles_from_runs(self._outline_counts(values, mixed), *self.output_size)

    def choose_dense(self, mixed: np.ndarray) -> bool:
        """Whether the dense path (the `dense_encoder` if given) is estimated cheaper than the
        outline path for a batch with these outline cells (n, h-1, w)."""
        height, width = self.output_size
        expanded = int(mixed.sum(axis=(0, 1)) @ np.diff(self._col_start))
        if self.dense_encoder is not None:
            dense = (ENCODER_BATCH_COST + expanded * ENCODER_PAIR_COST
                     + len(mixed) * self.grid_size[0] * width * ENCODER_ELEMENT_COST)
        else:
            dense = len(mixed) * height * width * (PIXEL_COST
                                                   + PIXEL_ROW_COST * self.grid_size[0])
        return dense < OUTLINE_BATCH_COST + expanded * OUTLINE_COST

    def _outline_cells(self, values: np.ndarray) -> np.ndarray:
        """(n, h-1, w) bool: cells (r, c) whose corners L[r..r+1, c..c+1] disagree in sign
        (c + 1 clamped at the last column); only there can a column's value cross zero
        between source rows r and r + 1."""
        positive = values > 0.0
        right = np.minimum(np.arange(self.grid_size[1]) + 1, self.grid_size[1] - 1)
        either = positive[:, :-1] | positive[:, 1:]
        both = positive[:, :-1] & positive[:, 1:]
        return (either | either[..., right]) & ~(both & both[..., right])

    def _outline_counts(self, values: np.ndarray, mixed: np.ndarray) -> list[np.ndarray]:
        """Uncompressed COCO counts of each mask of float64 logits (n, h, w) with their
        `_outline_cells`: alternating off/on run lengths, column-major, starting with an off
        run (0 if the mask starts on), no trailing off run."""
        height, width = self.output_size
        size = height * width
        num = len(values)
        # Row 0 of every column: on iff C[0, x] > 0; the last row: iff C[h-1, x] > 0 (the state
        # after every crossing of the column).
        top = self._columns(values[:, 0, :]) > 0.0  # (n, W)
        bottom = self._columns(values[:, -1, :]) > 0.0
        toggles = [self._column_start_toggles(top, bottom),
                   self._crossing_toggles(values, *np.nonzero(mixed))]
        keys = np.sort(np.concatenate(toggles), kind="stable")  # nearly sorted already
        # Toggles at one position cancel in pairs: keep the positions toggled an odd number
        # of times.
        first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        repeats = np.diff(np.append(first, len(keys)))
        keys = keys[first[repeats % 2 == 1]]
        owner = keys // (size + 1)
        positions = keys - owner * (size + 1)
        counts = run_lengths(positions, np.bincount(owner, minlength=num), size)
        if np.any(positions == size):  # pycocotools ends with the last non-empty run
            counts = [c[:-1] if len(c) > 1 and c[-1] == 0 else c for c in counts]
        return counts

    def _columns(self, rows: np.ndarray) -> np.ndarray:
        """(..., w) source rows -> (..., W) interpolated along the columns, float64."""
        return (rows[..., self._col_low] * self._col_rest
                + rows[..., self._col_high] * self._col_weight)

    def _column_start_toggles(self, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        """Global keys of the toggles at the top of each column: where a column starts in a
        state other than the one the previous column (of the same mask) ended in."""
        height, width = self.output_size
        previous = np.zeros_like(top)
        previous[:, 1:] = bottom[:, :-1]
        masks, columns = np.nonzero(top != previous)
        return masks * (height * width + 1) + columns * height

    def _crossing_toggles(self, values: np.ndarray, masks: np.ndarray, rows: np.ndarray,
                          cells: np.ndarray) -> np.ndarray:
        """Global keys of the zero crossings inside the mixed-sign cells (mask, row r, source
        column c): every output column reading c as its low tap, between rows r and r + 1."""
        # The output columns of cell c all read source columns c and min(c + 1, w - 1): the
        # four corner logits are gathered once per cell and repeated over its columns (the
        # same products and sums as `_columns`, so the same float64 values).
        if not len(cells):
            return np.empty(0, np.int64)
        first = self._col_start[cells]
        widths = self._col_start[cells + 1] - first
        right = np.minimum(cells + 1, self.grid_size[1] - 1)
        ends = np.cumsum(widths)
        # Output columns of each cell, expanded: first[c] + 0, 1, ..., widths - 1.
        columns = np.repeat(first - ends + widths, widths) + np.arange(ends[-1])
        weight, rest = self._col_weight[columns], self._col_rest[columns]

        def interpolated(row: np.ndarray) -> np.ndarray:
            return (np.repeat(values[masks, row, cells], widths) * rest
                    + np.repeat(values[masks, row, right], widths) * weight)

        upper, lower = interpolated(rows), interpolated(rows + 1)
        crossing = np.flatnonzero((upper > 0.0) != (lower > 0.0))
        cell = np.repeat(np.arange(len(cells)), widths)[crossing]
        return self._toggle_keys(masks[cell], rows[cell], columns[crossing], upper[crossing],
                                 lower[crossing])

    def _dense_rles(self, values: np.ndarray) -> list[dict]:
        """RLEs of float64 logits (n, h, w) through full masks: columns interpolated first (as
        the outline path), then rows by matrix products, thresholded, encoded by pycocotools.
        Masks go a few at a time, so that the float64 surface stays in cache."""
        height, width = self.output_size
        step = max(1, DENSE_CHUNK_PIXELS // (height * width))
        rest, weight = self._col_rest[:, None], self._col_weight[:, None]
        rles = []
        columns_per_product = max(1, BLAS_SINGLE_THREAD_WORK // (height * self.grid_size[0]))
        for first in range(0, len(values), step):
            by_column = values[first:first + step].transpose(0, 2, 1)  # (n, w, h)
            columns = (by_column[:, self._col_low] * rest
                       + by_column[:, self._col_high] * weight).reshape(-1, self.grid_size[0])
            surface = np.empty((len(columns), height))
            for row in range(0, len(columns), columns_per_product):
                np.matmul(columns[row:row + columns_per_product], self._row_matrix,
                          out=surface[row:row + columns_per_product])
            masks = (surface > 0.0).view(np.uint8).reshape(len(by_column), width, height)
            # (n, W, H) in C order is (H, W, n) in the Fortran order pycocotools reads.
            rles += json_rles(mask_util.encode(masks.transpose(2, 1, 0)), *self.output_size)
        return rles

    def _toggle_keys(self, masks: np.ndarray, rows: np.ndarray, columns: np.ndarray,
                     upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """Global keys of the crossings of column `columns` between source rows `rows` and
        rows + 1, whose interpolated values there are `upper` and `lower` (signs differ)."""
        height, width = self.output_size
        # Value on segment r: upper (1 - w) + lower w, zero at w = upper / (upper - lower). Going
        # down, an on segment turns off at the first row with w >= t; an off one turns on at
        # the first row with w > t.
        threshold = upper / (upper - lower)
        row = self._first_rows(rows, threshold, strict=upper <= 0.0)
        return masks * (height * width + 1) + columns * height + row

    def _first_rows(self, segments: np.ndarray, threshold: np.ndarray, strict: np.ndarray
                    ) -> np.ndarray:
        """Per crossing: the first output row of segment r (segments) whose weight w is >= t
        (> t where `strict`), or the segment's end if none is. A binary search over all rows
        would do; the rows' weights are an arithmetic progression, so their inverse gives the
        row up to rounding, and a few vectorised steps make it exact."""
        target = 2.0 * segments + threshold
        low, high = self._segment_start[segments], self._segment_start[segments + 1]
        # source(y) = (y + 0.5) h / H - 0.5 = r + t  <=>  y = (r + t + 0.5) H / h - 0.5
        row = np.ceil((segments + threshold + 0.5) * self._rows_per_source - 0.5)
        row = np.clip(row.astype(np.int64), low, high)
        keys = self._padded_keys  # keys[H] = inf: "past the segment" always qualifies

        def qualifies(index: np.ndarray, which: np.ndarray) -> np.ndarray:
            key, goal = keys[index], target[which]
            return np.where(strict[which], key > goal, key >= goal)

        while True:  # rows past the first qualifying one move up, rows before it down
            every = np.arange(len(row))
            down = every[(row > low) & qualifies(np.maximum(row - 1, 0), every)]
            up = every[(row < high) & ~qualifies(row, every)]
            if not len(down) and not len(up):
                return row
            row[down] -= 1
            row[up] += 1
