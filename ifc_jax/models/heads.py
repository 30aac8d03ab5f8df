"""Class head and dynamic (conditional-convolution) mask head (SPEC §5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def dynamic_mask_logits(kernels: Array, mask_features: Array) -> Array:
    """Each query's kernel as a bias-free 1x1 conv over its clip's stride-8 features.

    Args:
      kernels: (L, B, N, C), one kernel per decoder layer, clip and query.
      mask_features: (B, T, h8, w8, C), shared by all queries and layers of a clip.
    Returns:
      (L, B, N, T, h8, w8) mask logits.
    """
    with jax.named_scope("dynamic_mask_head"):
        return jnp.einsum("lbnc,bthwc->lbnthw", kernels, mask_features)
