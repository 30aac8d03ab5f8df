"""The stride-4 grid used by matching and losses: ground-truth targets and upsampled predictions.

docs/training.md#targets: GT masks are bilinearly downsampled (align_corners=False, no
antialias) to H/4 x W/4 giving soft targets; predicted stride-8 logits are bilinearly upsampled
x2 (align_corners=False) to the same grid. The downsampling is done on the host: the batch
carries `target_counts`, uint8 counts of set pixels among the 4 that each target pixel averages
(`data.clips.stride4_counts`), 16x fewer bytes than the masks; `soft_targets` makes them the
float32 targets. `jax.image.resize(..., antialias=False)` samples at half-pixel centres and
renormalises at the border, which is PyTorch's align_corners=False (tested against a numpy
transcription of PyTorch's formula).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


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
