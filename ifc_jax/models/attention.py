"""Multi-head attention and DETR-style post-norm transformer layers (docs/model.md#encoder-layer).

Every layer works on tokens with any number of leading batch axes, (..., S, C). That is how
IFC's layers are "vmapped": Encode-Receive runs on (B, T, hw+M, C), i.e. independently per
frame, and Gather-Communicate on (B, M, T, C), i.e. independently per memory slot.

Attention itself is `jax.nn.dot_product_attention` (fused by XLA, or cuDNN flash attention on
an NVIDIA GPU in bfloat16; see `select_implementation`) except when attention dropout is
active, which that function does not offer: then the weights are formed explicitly.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator

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


# Which kernel computes deterministic attention: "auto" (cuDNN's fused flash attention on an
# NVIDIA GPU for bfloat16/float16 compute, XLA's fused softmax(QK^T)V elsewhere), "xla" or
# "cudnn" (wherever the call qualifies). `jax.nn.dot_product_attention(implementation=None)`
# would always pick XLA's (jax 0.10), hence the explicit choice. Read when a model is traced:
# the IFC model sets it from `config.model.attention` with `attention_implementation`, and the
# IFC_JAX_ATTENTION environment variable, when set, overrides it for the whole process.
IMPLEMENTATIONS = ("auto", "xla", "cudnn")
ENVIRONMENT_VARIABLE = "IFC_JAX_ATTENTION"
_implementation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ifc_jax_attention", default=None)


@contextlib.contextmanager
def attention_implementation(name: str) -> Iterator[None]:
    """Traces inside the block use attention kernel `name` (one of IMPLEMENTATIONS)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, "
                         f"got {name!r}")
    token = _implementation.set(name)
    try:
        yield
    finally:
        _implementation.reset(token)


def _on_cuda_gpu() -> bool:
    """True when the default device is an NVIDIA GPU (cuDNN's flash attention exists there)."""
    try:
        device = jax.devices()[0]
    except RuntimeError:
        return False
    if device.platform != "gpu":
        return False
    try:  # e.g. "cuda 12080" or "rocm 6.2"
        return "rocm" not in device.client.platform_version.lower()
    except AttributeError:
        return True


def select_implementation(dtype: jnp.dtype, head_dim: int) -> str:
    """The `jax.nn.dot_product_attention` implementation for a deterministic call: "xla" or
    "cudnn". cuDNN's flash attention needs 16-bit inputs and a head dim that is a multiple of
    8 (<= 128): other calls get XLA's even when "cudnn" is asked for."""
    choice = os.environ.get(ENVIRONMENT_VARIABLE) or _implementation.get() or "auto"
    if choice not in IMPLEMENTATIONS:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={choice!r}: expected one of "
                         f"{', '.join(IMPLEMENTATIONS)}")
    cudnn_ok = (jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
                and head_dim <= 128)
    if choice == "xla" or not cudnn_ok:
        return "xla"
    # "cudnn" skips the device check (and fails at trace time where cuDNN is absent).
    return "cudnn" if choice == "cudnn" or _on_cuda_gpu() else "xla"


def _fused_attention(query: Array, key: Array, value: Array, key_padding_mask: Array | None,
                     implementation: str) -> Array:
    """`jax.nn.dot_product_attention` on (..., S, H, D) tokens, leading axes flattened.

    query is already scaled. Masked keys get a large finite negative logit (in float32), so a
    query whose keys are all padded attends uniformly to them, as the unfused path does.
    """
    lead = jnp.broadcast_shapes(query.shape[:-3], key.shape[:-3])
    flat = [jnp.broadcast_to(x, (*lead, *x.shape[-3:])).reshape(-1, *x.shape[-3:])
            for x in (query, key, value)]
    mask = None
    if key_padding_mask is not None:
        keys = key.shape[-3]
        valid = ~jnp.broadcast_to(key_padding_mask, (*lead, keys)).reshape(-1, 1, 1, keys)
        if implementation == "cudnn":  # its bias must be (B, N, Sq, Sk)-shaped in Sq and Sk
            valid = jnp.broadcast_to(valid, (valid.shape[0], 1, query.shape[-3], keys))
        mask = valid
    attended = jax.nn.dot_product_attention(*flat, mask=mask, scale=1.0,
                                            implementation=implementation)
    return attended.reshape(*lead, *attended.shape[1:])


@functools.partial(jax.jit, static_argnames=("dropout_rate", "deterministic", "implementation"))
def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    key_padding_mask: Array | None,
    dropout_rng: Array | None,
    dropout_rate: float,
    deterministic: bool,
    implementation: str = "xla",
) -> Array:
    """softmax(q k^T / sqrt(d)) v with a key padding mask and dropout on the weights.

    Deterministic calls (or dropout 0) use the fused `jax.nn.dot_product_attention` with
    `implementation` ("xla" or "cudnn"); with dropout the weights are formed explicitly. Both
    compute the logits and softmax in float32 and the weighted sum in the value dtype.

    Args:
      query: (..., Sq, H, D); key, value: (..., Sk, H, D).
      key_padding_mask: (..., Sk) bool, True = this key is padding, or None.
    Returns:
      (..., Sq, H, D).
    """
    depth = query.shape[-1]
    query = query * jnp.asarray(depth**-0.5, query.dtype)
    if deterministic or dropout_rate == 0.0:
        return _fused_attention(query, key, value, key_padding_mask, implementation)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key).astype(jnp.float32)
    if key_padding_mask is not None:
        # A large finite negative keeps fully padded rows finite (uniform weights) instead of NaN.
        big_negative = jnp.finfo(jnp.float32).min
        logits = jnp.where(key_padding_mask[..., None, None, :], big_negative, logits)
    weights = jax.nn.softmax(logits, axis=-1)
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
            # cuDNN's kernel is used for inference only (its training path has extra shape
            # limits, e.g. even sequence lengths with a mask, and no attention dropout here).
            select_implementation(q.dtype, head_dim) if deterministic else "xla",
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
    """Post-norm self-attention layer (DETR TransformerEncoderLayer, docs/model.md#encoder-layer).

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
    """Post-norm decoder layer: self-attn over queries, cross-attn to the clip, FFN.

    See docs/model.md#decoder.
    """

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
