"""DETR's 2-D sine position encoding, computed per frame from its padding mask.

See docs/model.md#position-encoding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def sine_position_encoding(
    padding_mask: Array,
    num_channels: int,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    epsilon: float = 1e-6,
) -> Array:
    """Normalised 2-D sine position encoding.

    Args:
      padding_mask: (..., h, w) bool, True where the pixel is padding.
      num_channels: C, the output channels; C/2 for y then C/2 for x.
    Returns:
      (..., h, w, C) float32: [pos_y (C/2) ; pos_x (C/2)], each interleaved as
      (sin p0, cos p1, sin p2, cos p3, ...) over frequencies temperature^(2*floor(i/2)/(C/2)).
    """
    if num_channels % 2:
        raise ValueError(f"position encoding needs an even channel count, got {num_channels}")
    num_feats = num_channels // 2
    not_padded = jnp.logical_not(padding_mask).astype(jnp.float32)
    y_embed = jnp.cumsum(not_padded, axis=-2)
    x_embed = jnp.cumsum(not_padded, axis=-1)
    # Normalise by the last row / column so valid positions span (0, 2*pi].
    y_embed = y_embed / (y_embed[..., -1:, :] + epsilon) * scale
    x_embed = x_embed / (x_embed[..., :, -1:] + epsilon) * scale

    index = jnp.arange(num_feats, dtype=jnp.float32)
    dim_t = temperature ** (2.0 * jnp.floor(index / 2.0) / num_feats)
    even = (jnp.arange(num_feats) % 2) == 0

    def encode(embed: Array) -> Array:
        phase = embed[..., None] / dim_t
        return jnp.where(even, jnp.sin(phase), jnp.cos(phase))

    return jnp.concatenate([encode(y_embed), encode(x_embed)], axis=-1)
