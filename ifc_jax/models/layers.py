"""Small building blocks shared by the IFC modules: norms, MLPs and PyTorch-matching initialisers.

The norms call module-level functions wrapped in `jax.jit`. Inside a larger trace they appear as
one `jit` equation named `layer_norm` / `group_norm`, which lets `ifc_jax.tools.flops` count
them with the paper's convention (5 FLOPs per element) instead of counting their arithmetic.
XLA inlines nested jits, so this costs nothing at run time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]

# PyTorch nn.Linear / nn.Conv2d default weights: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# Xavier uniform on a (fan_in, fan_out) matrix, as DETR's transformer reset.
xavier_uniform = nn.initializers.xavier_uniform()
# kaiming_uniform(a=1): U(+-sqrt(3/fan_in)), used by every conv of IFC's mask head.
kaiming_uniform_a1 = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias init for Linear/Conv: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: Array, shape: Sequence[int], dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@functools.partial(jax.jit, static_argnames=("epsilon",))
def layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
    """LayerNorm over the last axis, statistics in float32. x: (..., C)."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias
    return y.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("num_groups", "epsilon"))
def group_norm(x: Array, scale: Array, bias: Array, num_groups: int, epsilon: float) -> Array:
    """GroupNorm of an NHWC tensor over (H, W, C/G) per group, statistics in float32."""
    n, h, w, c = x.shape
    grouped = x.astype(jnp.float32).reshape(n, h, w, num_groups, c // num_groups)
    mean = jnp.mean(grouped, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(grouped - mean), axis=(1, 2, 4), keepdims=True)
    y = ((grouped - mean) * jax.lax.rsqrt(var + epsilon)).reshape(n, h, w, c) * scale + bias
    return y.astype(x.dtype)


class LayerNorm(nn.Module):
    """LayerNorm with PyTorch's default epsilon; params `scale` (1) and `bias` (0), shape (C,)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return layer_norm(x, scale, bias, self.epsilon)


class GroupNorm(nn.Module):
    """GroupNorm(num_groups) of NHWC features, PyTorch defaults (eps 1e-5, scale 1, bias 0)."""

    num_groups: int = 32
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        if features % self.num_groups:
            raise ValueError(f"GroupNorm: {features} channels not divisible by {self.num_groups}")
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return group_norm(x, scale, bias, self.num_groups, self.epsilon)


class TorchDense(nn.Module):
    """nn.Dense with PyTorch nn.Linear's default initialisation (weights and bias)."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        return nn.Dense(
            self.features,
            dtype=self.dtype,
            kernel_init=torch_default_kernel_init,
            bias_init=torch_default_bias_init(fan_in),
            name="dense",
        )(x)


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last), PyTorch default init.

    Attributes:
      features: output size of each layer, e.g. (256, 41) for IFC's class head.
    """

    features: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for index, size in enumerate(self.features):
            x = TorchDense(size, dtype=self.dtype, name=f"layers_{index}")(x)
            if index < len(self.features) - 1:
                x = nn.relu(x)
        return x
