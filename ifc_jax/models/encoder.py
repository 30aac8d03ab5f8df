"""Transformer encoders of the paper's communication comparison (docs/model.md#encoder).

All take per-frame tokens and return per-frame tokens of the same shape:
  tokens, position: (B, T, hw, C) with the 2-D sine position of each frame;
  padding_mask:     (B, T, hw) bool, True = padded pixel;
  frame_valid:      optional (B, T) bool, False on frames that only pad a clip in time (their
                    pixels must be all padded too); valid frames' outputs then do not depend
                    on them, which lets short windows share one compiled shape.

* `ifc`: per block, Encode-Receive = self-attention within each frame over its hw tokens plus
  M memory tokens; Gather-Communicate = self-attention of each memory slot across the T frames
  (no position, no mask). Only memory tokens cross frames.
* `no_comm`: self-attention within each frame only.
* `full_thw`: self-attention over all T*hw tokens of the clip (VisTR style).
* `decompose_thw`: spatial layers (within a frame) interleaved with temporal layers (each pixel
  across the T frames), S-T-S-T-S for 3 layers; the 3S + 2T count reproduces the paper's FLOPs.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifc_jax.models.attention import EncoderLayer

Array = jax.Array


# PyTorch kaiming_normal_(mode="fan_out", nonlinearity="relu") on an (M, C) tensor: fan_out is
# M, so the tokens are N(0, 2 / M).
memory_token_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal", in_axis=-1,
                                                     out_axis=-2)


def _frame_key_mask(frame_valid: Array | None, sequences: int) -> Array | None:
    """(B, T) valid frames -> (B, sequences, T) key padding mask for attention across time."""
    if frame_valid is None:
        return None
    batch, frames = frame_valid.shape
    return jnp.broadcast_to(~frame_valid[:, None, :], (batch, sequences, frames))


class EncoderOutput(NamedTuple):
    """frame_tokens (B, T, hw, C); memory_tokens (B, T, M, C) and memory_position (M, C) for
    `ifc`, None for the variants without memory tokens."""

    frame_tokens: Array
    memory_tokens: Array | None
    memory_position: Array | None


class _LayerStack(nn.Module):
    """Shared attributes of the encoders: layer sizes and compute dtype."""

    num_layers: int = 3
    num_heads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    dtype: jnp.dtype = jnp.float32

    def layer(self, name: str) -> EncoderLayer:
        return EncoderLayer(
            self.num_heads, self.dim_feedforward, self.dropout, self.dtype, name=name
        )


class IFCEncoder(_LayerStack):
    """Inter-frame communication through M memory tokens per frame."""

    num_memory_tokens: int = 8

    @nn.compact
    def __call__(
        self, tokens: Array, position: Array, padding_mask: Array, deterministic: bool = True,
        *, frame_valid: Array | None = None,
    ) -> EncoderOutput:
        if self.num_memory_tokens < 1:
            raise ValueError("the ifc encoder needs num_memory_tokens >= 1 (use no_comm for 0)")
        batch, frames, num_pixels, channels = tokens.shape
        memory_shape = (self.num_memory_tokens, channels)
        memory_init = self.param("memory_tokens", memory_token_init, memory_shape, jnp.float32)
        memory_position = self.param("memory_position", memory_token_init, memory_shape,
                                     jnp.float32)
        # Every frame starts from the same learned memory tokens.
        memory = jnp.broadcast_to(memory_init, (batch, frames, *memory_shape)).astype(self.dtype)
        frame_memory_position = jnp.broadcast_to(memory_position, (batch, frames, *memory_shape))
        er_position = jnp.concatenate([position, frame_memory_position], axis=2)
        er_mask = jnp.concatenate(
            [padding_mask, jnp.zeros((batch, frames, self.num_memory_tokens), bool)], axis=2
        )
        frame_tokens = tokens
        for index in range(self.num_layers):
            # Encode-Receive: each frame's pixels and memory tokens attend to one another.
            sequence = jnp.concatenate([frame_tokens, memory], axis=2)
            sequence = self.layer(f"encode_receive_{index}")(
                sequence, er_position, er_mask, deterministic
            )
            frame_tokens, memory = sequence[:, :, :num_pixels], sequence[:, :, num_pixels:]
            # Gather-Communicate: slot m of every frame attends across the T frames.
            slots = jnp.swapaxes(memory, 1, 2)  # (B, M, T, C)
            slots = self.layer(f"gather_communicate_{index}")(
                slots, None, _frame_key_mask(frame_valid, slots.shape[1]), deterministic)
            memory = jnp.swapaxes(slots, 1, 2)
        return EncoderOutput(frame_tokens, memory, memory_position)


class NoCommEncoder(_LayerStack):
    """Frames encoded independently; nothing crosses frames."""

    @nn.compact
    def __call__(
        self, tokens: Array, position: Array, padding_mask: Array, deterministic: bool = True,
        *, frame_valid: Array | None = None,
    ) -> EncoderOutput:
        for index in range(self.num_layers):
            tokens = self.layer(f"spatial_{index}")(tokens, position, padding_mask, deterministic)
        return EncoderOutput(tokens, None, None)


class FullSpaceTimeEncoder(_LayerStack):
    """Joint attention over all T*hw tokens of a clip."""

    @nn.compact
    def __call__(
        self, tokens: Array, position: Array, padding_mask: Array, deterministic: bool = True,
        *, frame_valid: Array | None = None,
    ) -> EncoderOutput:
        batch, frames, num_pixels, channels = tokens.shape
        flat = tokens.reshape(batch, frames * num_pixels, channels)
        flat_position = position.reshape(batch, frames * num_pixels, channels)
        flat_mask = padding_mask.reshape(batch, frames * num_pixels)
        for index in range(self.num_layers):
            flat = self.layer(f"spacetime_{index}")(
                flat, flat_position, flat_mask, deterministic
            )
        return EncoderOutput(flat.reshape(tokens.shape), None, None)


class DecomposedSpaceTimeEncoder(_LayerStack):
    """Spatial layers interleaved with temporal layers: S-T-S-...-S (num_layers spatial).

    Temporal layers see each pixel's T tokens with no position and no mask: a padded pixel is
    padded in every frame of a clip, so it only ever attends to itself.
    """

    @nn.compact
    def __call__(
        self, tokens: Array, position: Array, padding_mask: Array, deterministic: bool = True,
        *, frame_valid: Array | None = None,
    ) -> EncoderOutput:
        for index in range(self.num_layers):
            tokens = self.layer(f"spatial_{index}")(tokens, position, padding_mask, deterministic)
            if index < self.num_layers - 1:
                per_pixel = jnp.swapaxes(tokens, 1, 2)  # (B, hw, T, C)
                per_pixel = self.layer(f"temporal_{index}")(
                    per_pixel, None, _frame_key_mask(frame_valid, per_pixel.shape[1]),
                    deterministic)
                tokens = jnp.swapaxes(per_pixel, 1, 2)
        return EncoderOutput(tokens, None, None)


def build_encoder(
    communication: str,
    *,
    num_layers: int,
    num_heads: int,
    dim_feedforward: int,
    dropout: float,
    num_memory_tokens: int,
    dtype: jnp.dtype,
    name: str | None = "encoder",
) -> nn.Module:
    """The encoder module of a communication variant (`config.model.communication`, checked
    by the config's validation)."""
    common = dict(
        num_layers=num_layers,
        num_heads=num_heads,
        dim_feedforward=dim_feedforward,
        dropout=dropout,
        dtype=dtype,
        name=name,
    )
    if communication == "ifc":
        return IFCEncoder(num_memory_tokens=num_memory_tokens, **common)
    classes = {
        "no_comm": NoCommEncoder,
        "full_thw": FullSpaceTimeEncoder,
        "decompose_thw": DecomposedSpaceTimeEncoder,
    }
    return classes[communication](**common)
