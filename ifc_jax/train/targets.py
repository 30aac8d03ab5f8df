"""The stride-4 grid used by matching and losses: ground-truth targets and upsampled predictions.

docs/training.md#targets: GT masks are bilinearly downsampled (align_corners=False, no
antialias) to H/4 x W/4 giving soft targets; predicted stride-8 logits are bilinearly upsampled
x2 (align_corners=False) to the same grid. The downsampling is done on the host: the batch
carries `target_counts`, uint8 counts of set pixels among the 4 that each target pixel averages
(`data.clips.stride4_counts`), 16x fewer bytes than the masks; `soft_targets` makes them the
float32 targets. `jax.image.resize(..., antialias=False)` samples at half-pixel centres and
renormalises at the border, which is PyTorch's align_corners=False (tested against a numpy
transcription of PyTorch's formula).

The loss canvas (docs/training.md#loss-groups): the authors pad a loss group's clips (one
GPU's batch) to the largest valid frame among them, with no size divisibility, and compute
targets, predictions and losses on that canvas. We keep one static canvas for every batch and
mark, per clip, the part of the stride-4 grid its group's canvas covers (`loss_canvas`); the
losses and the matcher count only that part. For a group canvas of Hc x Wc pixels:
* stride-4 cells: the first ceil(Hc/4) x ceil(Wc/4), the size of the authors' targets. When
  Hc and Wc are multiples of 4 their targets are exactly these cells of ours (their
  downsampling factor is then 4 and their canvas is a top-left crop of ours);
* stride-8 predictions: the authors' mask head sees only the first ceil(Hc/8) x ceil(Wc/8)
  cells (ResNet's stride-8 size of an Hc x Wc image), and their x2 upsampling clamps at that
  border. `upsample_in_canvas` repeats the canvas's last row and column of stride-8 logits
  over the cells beyond it before our x2 upsampling, which gives their upsampled logits
  exactly whenever ceil(Hc/4) = 2 ceil(Hc/8) (Hc mod 8 in {0, 5, 6, 7}: 360, 480, 640, 853,
  864 all are), and leaves the logits outside the canvas without any gradient.
Other canvas sides (e.g. 853 = a 16:9 video at short side 480, not a multiple of 4) the
authors resample by a factor slightly off 4 (853 / 214 = 3.986) or 2: our grid has the same
number of cells and differs from theirs by that sub-pixel shift only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ifc_jax.data.clips import TARGET_STRIDE

Array = jax.Array
PREDICTION_STRIDE = 2 * TARGET_STRIDE  # the mask head's stride-8 logits


def resize_last_two(x: Array, height: int, width: int) -> Array:
    """Bilinear resize of the two trailing axes, align_corners=False, no antialias."""
    return jax.image.resize(x, (*x.shape[:-2], height, width), "bilinear", antialias=False)


def soft_targets(target_counts: Array) -> Array:
    """(..., H/4, W/4) uint8 counts 0..4 -> float32 soft targets in {0, 1/4, 1/2, 3/4, 1}.

    count / 4 is the mean of the 4 pixels that bilinear downsampling by 4 averages; exact in
    float32, so bit for bit what downsampling the masks on the device gave.
    """
    return target_counts.astype(jnp.float32) * 0.25


def upsample_predictions(mask_logits: Array, height: int, width: int) -> Array:
    """(..., h8, w8) mask logits -> (..., height, width), the stride-4 target grid."""
    return resize_last_two(mask_logits.astype(jnp.float32), height, width)


def num_loss_groups(batch_size: int, group_size: int) -> int:
    """How many loss groups a batch of `batch_size` clips has (group_size 0 = one group)."""
    if group_size < 0 or (group_size and batch_size % group_size):
        raise ValueError(f"loss group size {group_size} must be 0 or divide the batch size "
                         f"{batch_size} (config.train.loss_group_size)")
    return 1 if group_size == 0 else batch_size // group_size


def clip_sizes(padding_mask: Array) -> Array:
    """(B, T, H, W) bool, True = padded -> (B, 2) int32 valid (height, width) of each clip.

    The extent of the non-padded pixels: one past the last valid row and column (clips sit
    top-left in the canvas; an all-padded clip has size 0 x 0).
    """
    valid = jnp.logical_not(padding_mask)
    rows = jnp.any(valid, axis=(1, 3))  # (B, H)
    cols = jnp.any(valid, axis=(1, 2))  # (B, W)

    def extent(present: Array) -> Array:
        positions = jnp.arange(1, present.shape[-1] + 1, dtype=jnp.int32)
        return jnp.max(jnp.where(present, positions, 0), axis=-1)

    return jnp.stack([extent(rows), extent(cols)], axis=-1)


def group_canvas(sizes: Array, group_size: int) -> Array:
    """(B, 2) clip sizes -> (B, 2) each clip's group canvas: the largest height and the largest
    width among the clips of its group (consecutive clips of the global batch, `group_size` of
    them; 0 = the whole batch), as the authors pad one GPU's batch."""
    batch = sizes.shape[0]
    groups = num_loss_groups(batch, group_size)
    largest = sizes.reshape(groups, batch // groups, 2).max(axis=1)
    return jnp.repeat(largest, batch // groups, axis=0)


class LossCanvas(NamedTuple):
    """Where the losses and the matcher look, per clip (docs/training.md#loss-groups).

    cells8: (B, 2) int32 the canvas's extent on the stride-8 prediction grid.
    mask: (B, H/4, W/4) float32 1 on the canvas's stride-4 cells, 0 elsewhere.
    cells: (B,) float32 the number of those cells (the focal mean's per-frame divisor).
    """

    cells8: Array
    mask: Array
    cells: Array


def loss_canvas(padding_mask: Array, group_size: int, height: int, width: int) -> LossCanvas:
    """The loss canvas of every clip on the (height, width) = (H/4, W/4) target grid.

    padding_mask: (B, T, H, W) bool, True = padded. Static shapes: only values change with
    the batch, so one compilation serves every canvas.
    """
    canvas = group_canvas(clip_sizes(padding_mask), group_size)  # (B, 2) pixels

    def ceil_div(x: Array, d: int) -> Array:
        return (x + d - 1) // d

    cells4 = ceil_div(canvas, TARGET_STRIDE)
    rows = jnp.arange(height)[None, :] < cells4[:, :1]  # (B, height)
    cols = jnp.arange(width)[None, :] < cells4[:, 1:]   # (B, width)
    mask = (rows[:, :, None] & cols[:, None, :]).astype(jnp.float32)
    cells = (cells4[:, 0] * cells4[:, 1]).astype(jnp.float32)
    return LossCanvas(ceil_div(canvas, PREDICTION_STRIDE), mask, cells)


def clamp_to_canvas(mask_logits: Array, cells8: Array, batch_axis: int) -> Array:
    """(..., h8, w8) stride-8 logits with the clips on `batch_axis` -> the same shape, every
    row (column) at or past the clip's canvas extent replaced by the canvas's last one.

    What the authors' upsampling reads beyond their canvas border (they clamp there); the
    logits outside the canvas then get no gradient (the gather's transpose adds theirs to the
    border row and column, as PyTorch's clamped interpolation does).
    """
    height, width = mask_logits.shape[-2:]

    def clamp_one(logits: Array, extent: Array) -> Array:
        rows = jnp.minimum(jnp.arange(height), jnp.maximum(extent[0], 1) - 1)
        cols = jnp.minimum(jnp.arange(width), jnp.maximum(extent[1], 1) - 1)
        return jnp.take(jnp.take(logits, rows, axis=-2), cols, axis=-1)

    return jax.vmap(clamp_one, in_axes=(batch_axis, 0), out_axes=batch_axis)(mask_logits,
                                                                             cells8)


def upsample_in_canvas(mask_logits: Array, canvas: LossCanvas | None, height: int, width: int,
                       batch_axis: int) -> Array:
    """`upsample_predictions` of the logits as the authors' canvas has them (module docstring);
    canvas None: the whole grid."""
    if canvas is not None:
        mask_logits = clamp_to_canvas(mask_logits, canvas.cells8, batch_axis)
    return upsample_predictions(mask_logits, height, width)
