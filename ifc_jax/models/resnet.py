"""detectron2-style ResNet with frozen BatchNorm, returning res2..res5 (docs/model.md#backbone).

* Explicit PyTorch padding (7x7 stem pad 3, 3x3 pad 1, max-pool pad 1 with -inf), so every
  level has size ceil(H / stride): 360x640 -> res3 45x80, res4 23x40, res5 12x20.
* `stride_in_1x1=False` is the torchvision layout (stride in the 3x3 conv, used by the R-50
  config); True is the MSRA/caffe layout (stride in the first 1x1, used by R-101).
* Frozen BN: `scale`/`bias` live in `params` behind `stop_gradient`, `mean`/`var` in
  `batch_stats`, which the model never mutates. Stages below `freeze_at` are cut from the
  gradient (and so from the backward pass), as detectron2's `freeze_at=2` freezes stem + res2.
* `depth=0` builds a small ResNet from `stage_blocks` and `width` for tests and the toy config.
* `kernels` ("auto" | "xla" | "cpu", docs/model.md#kernels) picks the implementation of the
  1x1 convolutions and the stem's max-pool; parameters and values are the same on both paths.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifc_jax.models.layers import PointwiseConv, active_kernels

Array = jax.Array

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGE_NAMES = ("res2", "res3", "res4", "res5")
STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}

# detectron2's c2_msra_fill: kaiming normal, fan_out, ReLU gain. Pretrained weights replace it.
msra_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def max_pool_3x3_stride2(x: Array, kernels: str = "cpu") -> Array:
    """The stem's max-pool (3x3, stride 2, padding 1 with -inf) of NHWC `x`: (N, H, W, C) ->
    (N, ceil(H/2), ceil(W/2), C), PyTorch's MaxPool2d(3, 2, 1).

    kernels="cpu": the maximum of nine strided slices. `nn.max_pool` (kernels="xla") computes
    the same values, but its gradient (select-and-scatter) lowers on XLA:CPU to index
    bookkeeping that cost ~75 ms of the toy demo's 370 ms train step, against a few ms for the
    slices' element-wise selects. Both work in x's dtype. (The gradients differ only on ties.)
    """
    if kernels == "xla":
        # reduce_window pads with its init value, -inf; with 1 in front and 1 behind it has
        # floor((H + 2 - 3) / 2) + 1 = ceil(H / 2) windows, as the slices below.
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    if kernels != "cpu":
        raise ValueError(f"max_pool_3x3_stride2: kernels must be 'xla' or 'cpu', got {kernels!r}")
    n, height, width, channels = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    # Pad to 2*out + 1 rows/columns: one in front, and enough behind for the last window.
    padded = jnp.pad(x, ((0, 0), (1, 2 * out_h - height), (1, 2 * out_w - width), (0, 0)),
                     constant_values=-jnp.inf)
    out = None
    for dy in range(3):
        for dx in range(3):
            window = padded[:, dy:dy + 2 * out_h - 1:2, dx:dx + 2 * out_w - 1:2, :]
            out = window if out is None else jnp.maximum(out, window)
    return out


class FrozenBatchNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + bias, with nothing ever trained or updated."""

    epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32).value
        var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32).value
        scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)
        multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
        shift = bias - mean * multiplier
        return x * multiplier.astype(self.dtype) + shift.astype(self.dtype)


class ConvNorm(nn.Module):
    """Bias-free conv followed by frozen BN (detectron2 `Conv2d(..., norm=FrozenBN)`)."""

    features: int
    kernel_size: int
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.kernel_size == 1:
            x = PointwiseConv(self.features, self.stride, use_bias=False, dtype=self.dtype,
                              kernel_init=msra_conv_init, kernels=self.kernels, name="conv")(x)
            return FrozenBatchNorm(dtype=self.dtype, name="norm")(x)
        pad = (self.kernel_size - 1) // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            dtype=self.dtype,
            kernel_init=msra_conv_init,
            name="conv",
        )(x)
        return FrozenBatchNorm(dtype=self.dtype, name="norm")(x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a projection shortcut when the shape changes."""

    out_channels: int
    bottleneck_channels: int
    stride: int = 1
    stride_in_1x1: bool = False
    dtype: jnp.dtype = jnp.float32
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        stride_1x1, stride_3x3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        if x.shape[-1] != self.out_channels or self.stride != 1:
            shortcut = ConvNorm(
                self.out_channels, 1, self.stride, self.dtype, self.kernels, name="shortcut"
            )(x)
        else:
            shortcut = x
        y = nn.relu(ConvNorm(self.bottleneck_channels, 1, stride_1x1, self.dtype, self.kernels,
                             name="conv1")(x))
        y = nn.relu(ConvNorm(self.bottleneck_channels, 3, stride_3x3, self.dtype, self.kernels,
                             name="conv2")(y))
        y = ConvNorm(self.out_channels, 1, 1, self.dtype, self.kernels, name="conv3")(y)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """ResNet trunk (no pooling head). Input NHWC, normalised pixels.

    Attributes:
      depth: 50 or 101; 0 means `stage_blocks` gives the number of blocks per stage.
      width: bottleneck channels of res2 (64 standard); stage k has 4*width*2^(k-2) outputs.
      freeze_at: 0 = train all, 1 = freeze the stem, 2 = freeze stem and res2.
      kernels: "auto" | "xla" | "cpu", the 1x1 convolutions' and max-pool's implementation.
    Returns:
      dict res2..res5 of (N, ceil(H/s), ceil(W/s), C_s) for strides 4, 8, 16, 32.
    """

    depth: int = 50
    width: int = 64
    stage_blocks: Sequence[int] = ()
    stride_in_1x1: bool = False
    freeze_at: int = 2
    dtype: jnp.dtype = jnp.float32
    kernels: str = "auto"

    def blocks_per_stage(self) -> Sequence[int]:
        if self.depth == 0:
            if len(self.stage_blocks) != 4:
                raise ValueError(f"stage_blocks needs 4 entries, got {self.stage_blocks}")
            return tuple(self.stage_blocks)
        if self.depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet depth must be 50, 101 or 0 (custom), got {self.depth}")
        return STAGE_BLOCKS[self.depth]

    @nn.compact
    def __call__(self, x: Array) -> dict[str, Array]:
        x = x.astype(self.dtype)
        stem = ConvNorm(self.width, 7, 2, self.dtype, name="stem_conv1")
        x = nn.relu(stem(x))
        x = max_pool_3x3_stride2(x, active_kernels(self.kernels))
        if self.freeze_at >= 1:
            x = jax.lax.stop_gradient(x)
        features = {}
        for stage_index, (name, num_blocks) in enumerate(
            zip(STAGE_NAMES, self.blocks_per_stage(), strict=True)
        ):
            bottleneck = self.width * 2**stage_index
            for block_index in range(num_blocks):
                x = Bottleneck(
                    out_channels=bottleneck * 4,
                    bottleneck_channels=bottleneck,
                    stride=2 if (block_index == 0 and stage_index > 0) else 1,
                    stride_in_1x1=self.stride_in_1x1,
                    dtype=self.dtype,
                    kernels=self.kernels,
                    name=f"{name}_{block_index}",
                )(x)
            if stage_index + 2 <= self.freeze_at:
                x = jax.lax.stop_gradient(x)
            features[name] = x
        return features


def resnet_output_channels(width: int) -> dict[str, int]:
    """Channels of res2..res5 for a given res2 bottleneck width (64 -> 256..2048)."""
    return {name: width * 4 * 2**index for index, name in enumerate(STAGE_NAMES)}
