"""Resizing predictions and ground truth to the stride-4 grid used by matching and losses.

docs/training.md#targets: GT masks are bilinearly downsampled (align_corners=False, no antialias) to
ceil(H/4) x ceil(W/4) giving soft targets; predicted stride-8 logits are bilinearly upsampled
x2 (align_corners=False) to the same grid. `jax.image.resize(..., antialias=False)` samples at
half-pixel centres and renormalises at the border, which is PyTorch's align_corners=False
(tested against a numpy transcription of PyTorch's formula).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def resize_last_two(x: Array, height: int, width: int) -> Array:
    """Bilinear resize of the two trailing axes, align_corners=False, no antialias."""
    return jax.image.resize(x, (*x.shape[:-2], height, width), "bilinear", antialias=False)


def stride4_targets(masks: Array) -> Array:
    """(..., H, W) binary masks -> (..., ceil(H/4), ceil(W/4)) float32 soft targets."""
    height, width = masks.shape[-2:]
    if height % 4 == 0 and width % 4 == 0:
        # Exactly /4, output pixel i samples input coordinate 4i + 1.5: the mean of rows
        # 4i+1, 4i+2 and columns 4j+1, 4j+2, never clamped. The same numbers as the resize
        # below, computed with a reshape and one small sum: jax.image.resize's transposes of
        # the full-resolution masks took ~40 ms of the toy demo's 370 ms CPU train step.
        blocks = masks.reshape(*masks.shape[:-2], height // 4, 4, width // 4, 4)
        inner = blocks[..., 1:3, :, 1:3].astype(jnp.float32)
        return jnp.sum(inner, axis=(-3, -1)) * 0.25
    return resize_last_two(masks.astype(jnp.float32), -(-height // 4), -(-width // 4))


def upsample_predictions(mask_logits: Array, height: int, width: int) -> Array:
    """(..., h8, w8) mask logits -> (..., height, width), the stride-4 target grid."""
    return resize_last_two(mask_logits.astype(jnp.float32), height, width)
