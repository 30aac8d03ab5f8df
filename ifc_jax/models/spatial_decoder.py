"""Instance-agnostic mask features at stride 8 (IFC `MaskHead` first part).

See docs/model.md#spatial-decoder.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifc_jax.models.layers import DepthwiseConv, GroupNorm, PointwiseConv, kaiming_uniform_a1

Array = jax.Array


def legacy_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output index under PyTorch's legacy `nearest` resize.

    PyTorch uses floor(dst * in / out) with a float32 scale (not half-pixel centres), which
    differs from `jax.image.resize(..., "nearest")` when sizes are not multiples (12 -> 23).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    index = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, in_size - 1)


def legacy_nearest_resize(x: Array, height: int, width: int) -> Array:
    """Resize NHWC `x` to (height, width) like F.interpolate(mode="nearest", size=...)."""
    rows = legacy_nearest_indices(x.shape[1], height)
    cols = legacy_nearest_indices(x.shape[2], width)
    return x[:, rows][:, :, cols]


class SpatialDecoder(nn.Module):
    """FPN-like decoder from encoder tokens (stride 32) + res4 + res3 to stride-8 features.

    lay1+gn1 -> + adapter1(res4) -> lay2+gn2 -> + adapter2(res3) -> lay3+gn3+ReLU ->
    depthwise 5x5 + ReLU -> pointwise 1x1 + ReLU. No activation after gn1 and gn2 (as in IFC).
    """

    hidden_dim: int = 256
    num_groups: int = 32
    dtype: jnp.dtype = jnp.float32
    kernels: str = "auto"  # auto | xla | cpu: the 1x1 and depthwise convs (docs/model.md#kernels)

    def conv(self, kernel: int, name: str) -> nn.Module:
        if kernel == 1:
            return PointwiseConv(self.hidden_dim, dtype=self.dtype, kernels=self.kernels,
                                 name=name)
        pad = (kernel - 1) // 2
        return nn.Conv(
            self.hidden_dim,
            (kernel, kernel),
            padding=((pad, pad), (pad, pad)),
            dtype=self.dtype,
            kernel_init=kaiming_uniform_a1,
            bias_init=nn.initializers.zeros,
            name=name,
        )

    @nn.compact
    def __call__(self, encoded: Array, res4: Array, res3: Array) -> Array:
        """encoded: (N, h, w, C) stride 32; res4: (N, h4, w4, C4); res3: (N, h3, w3, C3).

        Returns (N, h3, w3, C) mask features, non-negative.
        """
        x = GroupNorm(self.num_groups, name="gn1")(self.conv(3, "lay1")(encoded))
        x = self.conv(1, "adapter1")(res4) + legacy_nearest_resize(x, *res4.shape[1:3])
        x = GroupNorm(self.num_groups, name="gn2")(self.conv(3, "lay2")(x))
        x = self.conv(1, "adapter2")(res3) + legacy_nearest_resize(x, *res3.shape[1:3])
        x = nn.relu(GroupNorm(self.num_groups, name="gn3")(self.conv(3, "lay3")(x)))
        x = nn.relu(DepthwiseConv(5, dtype=self.dtype, kernels=self.kernels,
                                  name="out_depthwise")(x))
        return nn.relu(self.conv(1, "out_pointwise")(x))
