"""Multi-head attention and DETR-style post-norm transformer layers (SPEC §2.1, §4).

Every layer works on tokens with any number of leading batch axes, (..., S, C). That is how
IFC's layers are "vmapped": Encode-Receive runs on (B, T, hw+M, C), i.e. independently per
frame, and Gather-Communicate on (B, M, T, C), i.e. independently per memory slot.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifc_jax.models.layers import (
    LayerNorm,
    torch_default_bias_init,
    xavier_uniform,
)

Array = jax.Array

# PyTorch packs q, k, v into one (3C, C) in_proj matrix and xavier-initialises it as a whole:
# U(+-sqrt(6 / (C + 3C))). On our separate (C, C) kernels the same bound is a fan-avg scale of
# (C + C) / (C + 3C) = 0.5.
packed_in_proj_init = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform")


@functools.partial(jax.jit, static_argnames=("dropout_rate", "deterministic"))
def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    key_padding_mask: Array | None,
    dropout_rng: Array | None,
    dropout_rate: float,
    deterministic: bool,
) -> Array:
    """softmax(q k^T / sqrt(d)) v with a key padding mask and dropout on the weights.

    Args:
      query: (..., Sq, H, D); key, value: (..., Sk, H, D).
      key_padding_mask: (..., Sk) bool, True = this key is padding, or None.
    Returns:
      (..., Sq, H, D).
    """
    depth = query.shape[-1]
    query = query * jnp.asarray(depth**-0.5, query.dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key).astype(jnp.float32)
    if key_padding_mask is not None:
        # A large finite negative keeps fully padded rows finite (uniform weights) instead of NaN.
        big_negative = jnp.finfo(jnp.float32).min
        logits = jnp.where(key_padding_mask[..., None, None, :], big_negative, logits)
    weights = jax.nn.softmax(logits, axis=-1)
    if not deterministic and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("...hqk,...khd->...qhd", weights.astype(value.dtype), value)


class MultiHeadAttention(nn.Module):
    """PyTorch nn.MultiheadAttention semantics with separate q/k/v projections.

    Params: `query`, `key`, `value`, `out` Dense layers (C -> C), biases initialised to 0.
    """

    num_heads: int
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        query: Array,
        key: Array,
        value: Array,
        key_padding_mask: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """query: (..., Sq, C); key, value: (..., Sk, C); key_padding_mask: (..., Sk)."""
        features = query.shape[-1]
        if features % self.num_heads:
            raise ValueError(f"hidden dim {features} not divisible by {self.num_heads} heads")
        head_dim = features // self.num_heads

        def project(x: Array, name: str) -> Array:
            y = nn.Dense(
                features, dtype=self.dtype, kernel_init=packed_in_proj_init, name=name
            )(x)
            return y.reshape(*y.shape[:-1], self.num_heads, head_dim)

        q, k, v = project(query, "query"), project(key, "key"), project(value, "value")
        use_dropout = not deterministic and self.dropout > 0.0
        attended = dot_product_attention(
            q,
            k,
            v,
            key_padding_mask,
            self.make_rng("dropout") if use_dropout else None,
            self.dropout,
            not use_dropout,
        )
        attended = attended.reshape(*attended.shape[:-2], features)
        return nn.Dense(features, dtype=self.dtype, kernel_init=xavier_uniform, name="out")(
            attended
        )


def _with_position(x: Array, position: Array | None) -> Array:
    return x if position is None else x + position.astype(x.dtype)


class FeedForward(nn.Module):
    """linear2(dropout(relu(linear1(x)))), DETR's FFN with its init (xavier, torch bias)."""

    dim_feedforward: int
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        features = x.shape[-1]
        hidden = nn.Dense(
            self.dim_feedforward,
            dtype=self.dtype,
            kernel_init=xavier_uniform,
            bias_init=torch_default_bias_init(features),
            name="linear1",
        )(x)
        hidden = nn.Dropout(self.dropout)(nn.relu(hidden), deterministic=deterministic)
        return nn.Dense(
            features,
            dtype=self.dtype,
            kernel_init=xavier_uniform,
            bias_init=torch_default_bias_init(self.dim_feedforward),
            name="linear2",
        )(hidden)


class EncoderLayer(nn.Module):
    """Post-norm self-attention layer (DETR TransformerEncoderLayer, SPEC §2.1).

    x = norm1(x + drop(attn(x + pos, x + pos, x)));  x = norm2(x + drop(ffn(x)))
    """

    num_heads: int
    dim_feedforward: int
    dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: Array,
        position: Array | None = None,
        key_padding_mask: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """x, position: (..., S, C); key_padding_mask: (..., S). Returns (..., S, C)."""
        x = x.astype(self.dtype)
        query_key = _with_position(x, position)
        attended = MultiHeadAttention(
            self.num_heads, self.dropout, self.dtype, name="self_attn"
        )(query_key, query_key, x, key_padding_mask, deterministic)
        x = LayerNorm(name="norm1")(
            x + nn.Dropout(self.dropout)(attended, deterministic=deterministic)
        )
        ffn = FeedForward(self.dim_feedforward, self.dropout, self.dtype, name="ffn")
        x = LayerNorm(name="norm2")(
            x + nn.Dropout(self.dropout)(ffn(x, deterministic), deterministic=deterministic)
        )
        return x


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attn over queries, cross-attn to the clip, FFN (SPEC §4)."""

    num_heads: int
    dim_feedforward: int
    dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        target: Array,
        query_position: Array,
        memory: Array,
        memory_position: Array,
        memory_padding_mask: Array | None,
        deterministic: bool = True,
    ) -> Array:
        """target, query_position: (B, N, C); memory, memory_position: (B, S, C).

        memory_padding_mask: (B, S) bool. Returns (B, N, C).
        """
        dropout = functools.partial(nn.Dropout(self.dropout), deterministic=deterministic)
        query_key = _with_position(target, query_position)
        attended = MultiHeadAttention(
            self.num_heads, self.dropout, self.dtype, name="self_attn"
        )(query_key, query_key, target, None, deterministic)
        target = LayerNorm(name="norm1")(target + dropout(attended))
        attended = MultiHeadAttention(
            self.num_heads, self.dropout, self.dtype, name="cross_attn"
        )(
            _with_position(target, query_position),
            _with_position(memory, memory_position),
            memory,
            memory_padding_mask,
            deterministic,
        )
        target = LayerNorm(name="norm2")(target + dropout(attended))
        ffn = FeedForward(self.dim_feedforward, self.dropout, self.dtype, name="ffn")
        return LayerNorm(name="norm3")(target + dropout(ffn(target, deterministic)))
