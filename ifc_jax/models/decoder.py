"""Clip-level transformer decoder: N queries attend to a clip's frame + memory tokens.

See docs/model.md#decoder.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifc_jax.models.attention import DecoderLayer
from ifc_jax.models.layers import LayerNorm

Array = jax.Array


class TransformerDecoder(nn.Module):
    """DETR post-norm decoder; every layer's output goes through the shared final `norm`.

    Returns (L, B, N, C): the normed output of each of the L layers (the last is the final one).
    """

    num_layers: int = 3
    num_heads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        query_position: Array,
        memory: Array,
        memory_position: Array,
        memory_padding_mask: Array,
        deterministic: bool = True,
    ) -> Array:
        """query_position: (N, C); memory, memory_position: (B, S, C); mask: (B, S) bool."""
        batch = memory.shape[0]
        query_position = jnp.broadcast_to(
            query_position.astype(self.dtype), (batch, *query_position.shape)
        )
        target = jnp.zeros_like(query_position)
        norm = LayerNorm(name="norm")
        outputs = []
        for index in range(self.num_layers):
            target = DecoderLayer(
                self.num_heads, self.dim_feedforward, self.dropout, self.dtype,
                name=f"layers_{index}",
            )(target, query_position, memory, memory_position, memory_padding_mask, deterministic)
            outputs.append(norm(target))
        return jnp.stack(outputs)
