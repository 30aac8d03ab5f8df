"""The whole IFC model: backbone -> encoder -> decoder + spatial decoder -> class and mask heads.

Input: raw RGB frames and their padding mask; output: class logits and stride-8 mask logits
for every decoder layer (docs/model.md#overview). Everything is NHWC and tokens are (B, T, hw, C).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifc_jax.models.attention import attention_implementation
from ifc_jax.models.decoder import TransformerDecoder
from ifc_jax.models.encoder import build_encoder
from ifc_jax.models.layers import (
    MLP,
    PointwiseConv,
    resolve_kernels,
    torch_default_bias_init,
    torch_default_kernel_init,
)
from ifc_jax.models.position import sine_position_encoding
from ifc_jax.models.resnet import ResNet, resnet_output_channels
from ifc_jax.models.spatial_decoder import SpatialDecoder

Array = jax.Array

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def level_padding_mask(valid_height: Array, valid_width: Array, size: tuple[int, int],
                       stride: int) -> Array:
    """Padding mask of a feature level: valid = the top-left ceil(h/s) x ceil(w/s) region.

    valid_height, valid_width: (N,) int32 valid pixels of each frame. Returns (N, *size) bool.
    """
    rows = -(-valid_height // stride)
    cols = -(-valid_width // stride)
    row_padded = jnp.arange(size[0])[None, :] >= rows[:, None]
    col_padded = jnp.arange(size[1])[None, :] >= cols[:, None]
    return row_padded[:, :, None] | col_padded[:, None, :]


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


class IFC(nn.Module):
    """Inter-Frame Communication Transformer for video instance segmentation.

    Attributes mirror `config.model` (see configs/ifc_r50_ytvis19.py); build one from a
    config with `IFC.from_config(config.model)`.
    """

    num_classes: int
    hidden_dim: int
    num_heads: int
    dim_feedforward: int
    dropout: float
    enc_layers: int
    dec_layers: int
    communication: str
    num_memory_tokens: int
    num_queries: int
    backbone_depth: int
    backbone_width: int
    backbone_stage_blocks: Sequence[int]
    stride_in_1x1: bool
    freeze_at: int
    input_format: str
    pixel_mean: Sequence[float]
    pixel_std: Sequence[float]
    dtype: Any
    attention: str  # attention kernel: auto | xla | cudnn (see models/attention.py)
    # Convolution / max-pool implementation: xla | cpu (docs/model.md#kernels). `from_config`
    # resolves "auto" for the backend it runs on; a model built directly may pass "auto".
    kernels: str = "auto"

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any]) -> IFC:
        """Builds the model from a validated `config.model` (ifc_jax.config.validate)."""
        backbone = model_config["backbone"]
        return cls(
            num_classes=model_config["num_classes"],
            hidden_dim=model_config["hidden_dim"],
            num_heads=model_config["num_heads"],
            dim_feedforward=model_config["dim_feedforward"],
            dropout=model_config["dropout"],
            enc_layers=model_config["enc_layers"],
            dec_layers=model_config["dec_layers"],
            communication=model_config["communication"],
            num_memory_tokens=model_config["num_memory_tokens"],
            num_queries=model_config["num_queries"],
            backbone_depth=backbone["depth"],
            backbone_width=backbone["width"],
            backbone_stage_blocks=tuple(backbone["stage_blocks"]),
            stride_in_1x1=backbone["stride_in_1x1"],
            freeze_at=backbone["freeze_at"],
            input_format=model_config["input_format"],
            pixel_mean=tuple(model_config["pixel_mean"]),
            pixel_std=tuple(model_config["pixel_std"]),
            dtype=DTYPES[model_config["dtype"]],
            attention=model_config["attention"],
            kernels=resolve_kernels(model_config["kernels"]),
        )

    def normalize(self, frames: Array, padding_mask: Array) -> Array:
        """(N, H, W, 3) RGB 0..255 -> the backbone's format, normalised, zero where padded."""
        x = frames.astype(jnp.float32)
        if self.input_format == "BGR":
            x = x[..., ::-1]
        x = (x - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)
        return jnp.where(padding_mask[..., None], 0.0, x).astype(self.dtype)

    def setup(self) -> None:
        self.backbone = ResNet(
            depth=self.backbone_depth,
            width=self.backbone_width,
            stage_blocks=self.backbone_stage_blocks,
            stride_in_1x1=self.stride_in_1x1,
            freeze_at=self.freeze_at,
            dtype=self.dtype,
            kernels=self.kernels,
        )
        res5_channels = resnet_output_channels(self.backbone_width)["res5"]
        self.input_proj = PointwiseConv(
            self.hidden_dim,
            dtype=self.dtype,
            kernel_init=torch_default_kernel_init,
            kernels=self.kernels,
            bias_init=torch_default_bias_init(res5_channels),
        )
        self.encoder = build_encoder(
            self.communication,
            num_layers=self.enc_layers,
            num_heads=self.num_heads,
            dim_feedforward=self.dim_feedforward,
            dropout=self.dropout,
            num_memory_tokens=self.num_memory_tokens,
            dtype=self.dtype,
            name=None,
        )
        self.query_embed = self.param(
            "query_embed", nn.initializers.normal(1.0), (self.num_queries, self.hidden_dim),
            jnp.float32,
        )
        self.decoder = TransformerDecoder(
            num_layers=self.dec_layers,
            num_heads=self.num_heads,
            dim_feedforward=self.dim_feedforward,
            dropout=self.dropout,
            dtype=self.dtype,
        )
        self.class_embed = MLP((self.hidden_dim, self.num_classes + 1), self.dtype)
        self.spatial_decoder = SpatialDecoder(self.hidden_dim, dtype=self.dtype,
                                              kernels=self.kernels)
        self.mask_kernel = MLP((self.hidden_dim,) * 3, self.dtype)

    def frame_features(self, frames: Array, padding_mask: Array) -> dict[str, Array]:
        """The per-frame half: backbone, input projection, position encoding.

        Args:
          frames: (F, H, W, 3) RGB 0..255; padding_mask: (F, H, W) bool, True = padded.
        Returns:
          tokens, position (F, h5, w5, C); mask (F, h5, w5) bool; res4 (F, h16, w16, C4);
          res3 (F, h8, w8, C3). Each frame's features depend on that frame only, so a video's
          frames can be encoded once and shared by every window that contains them.
        """
        pixels = self.normalize(frames, padding_mask)
        features = self.backbone(pixels)
        res5 = features["res5"]
        valid_height = jnp.sum(~padding_mask[:, :, 0], axis=1)
        valid_width = jnp.sum(~padding_mask[:, 0, :], axis=1)
        mask = level_padding_mask(valid_height, valid_width, res5.shape[1:3], 32)
        position = sine_position_encoding(mask, self.hidden_dim).astype(self.dtype)
        return {
            "tokens": self.input_proj(res5),
            "position": position,
            "mask": mask,
            "res4": features["res4"],
            "res3": features["res3"],
        }

    def clip_outputs(
        self,
        features: dict[str, Array],
        train: bool = False,
        all_layers: bool | None = None,
        frame_valid: Array | None = None,
    ) -> dict[str, Array]:
        """The per-clip half: encoder, decoder, spatial decoder and heads.

        Args:
          features: `frame_features` outputs with a (B, T) leading shape instead of (F,).
          frame_valid: optional (B, T) bool; False marks frames that only pad the clip in time
            (their pixels must be fully padded). Outputs for valid frames are then exactly
            those of the clip without them.
        Returns:
          as `__call__`.
        """
        all_layers = train if all_layers is None else all_layers
        deterministic = not train
        tokens = features["tokens"]
        batch, frames, h5, w5, channels = tokens.shape
        clip_shape = (batch, frames, h5 * w5)
        position = features["position"].reshape(*clip_shape, channels)
        mask = features["mask"].reshape(clip_shape)
        with attention_implementation(self.attention):  # read while the layers are traced
            encoded = self.encoder(tokens.reshape(*clip_shape, channels), position, mask,
                                   deterministic, frame_valid=frame_valid)

        # Decoder keys: all frame tokens of the clip (t-major), then all its memory tokens.
        memory = encoded.frame_tokens.reshape(batch, -1, channels)
        memory_position = position.reshape(batch, -1, channels)
        memory_mask = mask.reshape(batch, -1)
        if encoded.memory_tokens is not None:
            memory_tokens = encoded.memory_tokens  # (B, T, M, C)
            slots = memory_tokens.shape[2]
            memory = jnp.concatenate([memory, memory_tokens.reshape(batch, -1, channels)], 1)
            slot_position = jnp.broadcast_to(encoded.memory_position.astype(self.dtype),
                                             memory_tokens.shape)
            memory_position = jnp.concatenate(
                [memory_position, slot_position.reshape(batch, -1, channels)], axis=1)
            slot_mask = jnp.zeros((batch, frames, slots), bool)
            if frame_valid is not None:
                slot_mask = jnp.broadcast_to(~frame_valid[:, :, None], slot_mask.shape)
            memory_mask = jnp.concatenate([memory_mask, slot_mask.reshape(batch, -1)], 1)
        with attention_implementation(self.attention):
            decoded = self.decoder(self.query_embed, memory, memory_position, memory_mask,
                                   deterministic)
        if not all_layers:
            decoded = decoded[-1:]

        class_logits = self.class_embed(decoded)
        mask_features = self.spatial_decoder(
            encoded.frame_tokens.reshape(batch * frames, h5, w5, channels),
            features["res4"].reshape(batch * frames, *features["res4"].shape[2:]),
            features["res3"].reshape(batch * frames, *features["res3"].shape[2:]),
        )
        mask_logits = dynamic_mask_logits(
            self.mask_kernel(decoded),
            mask_features.reshape(batch, frames, *mask_features.shape[1:]),
        )
        return {
            "pred_logits": class_logits.astype(jnp.float32),
            "pred_masks": mask_logits.astype(jnp.float32),
        }

    def __call__(
        self,
        frames: Array,
        padding_mask: Array,
        train: bool = False,
        all_layers: bool | None = None,
    ) -> dict[str, Array]:
        """Runs the model on a batch of clips.

        Args:
          frames: (B, T, H, W, 3) RGB pixels in 0..255 (uint8 or float), zero-padded.
          padding_mask: (B, T, H, W) bool, True on padded pixels. Each frame's valid region is
            its top-left corner.
          train: enables dropout (needs a 'dropout' rng).
          all_layers: heads on every decoder layer (deep supervision); default = `train`.
        Returns:
          `pred_logits` (L, B, N, K+1) and `pred_masks` (L, B, N, T, ceil(H/8), ceil(W/8)),
          float32, with L = dec_layers if all_layers else 1 (the last layer).
        """
        batch, frames_per_clip, height, width = padding_mask.shape
        features = self.frame_features(
            frames.reshape(batch * frames_per_clip, height, width, frames.shape[-1]),
            padding_mask.reshape(batch * frames_per_clip, height, width),
        )
        features = {name: value.reshape(batch, frames_per_clip, *value.shape[1:])
                    for name, value in features.items()}
        return self.clip_outputs(features, train, all_layers)
