"""Small building blocks shared by the IFC modules: norms, MLPs and PyTorch-matching initialisers.

The norms and the depthwise convolution call module-level functions wrapped in `jax.jit`. Inside
a larger trace they appear as one `jit` equation named `layer_norm` / `group_norm` /
`depthwise_conv` (or `pointwise_conv`), which lets `ifc_jax.flops` count them with the paper's
convention (5 FLOPs per element for norms, kernel area per output element for the depthwise
convolution) instead of counting their arithmetic. XLA inlines nested jits, so this costs
nothing at run time.

Kernel paths (`config.model.kernels`, docs/model.md#kernels): the depthwise and pointwise
convolutions and the stem's max-pool have two implementations. "cpu" rewrites them as shifted
multiply-adds, dot products and strided slices, which XLA:CPU runs several times faster than
its grouped/1x1 convolutions and select-and-scatter; "xla" uses the standard ops
(`conv_general_dilated`, `reduce_window`) that cuDNN and the TPU compiler have kernels for.
Both paths hold the same parameters, so checkpoints and converted weights fit either.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator, Sequence

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


# Values of `config.model.kernels`; "auto" is resolved to one of the other two by
# `resolve_kernels` when a model is built.
KERNEL_PATHS = ("auto", "xla", "cpu")
_kernels_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ifc_jax_kernels", default=None)


def resolve_kernels(name: str) -> str:
    """"auto" -> "cpu" on the XLA:CPU backend, "xla" on any other; "xla"/"cpu" unchanged."""
    if name not in KERNEL_PATHS:
        raise ValueError(f"kernels must be one of {KERNEL_PATHS}, got {name!r}")
    if name == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "xla"
    return name


@contextlib.contextmanager
def kernels_override(name: str) -> Iterator[None]:
    """Modules traced inside the block use kernel path `name` ("xla" or "cpu") whatever their
    `kernels` attribute says. `ifc_jax.flops` pins "cpu" this way so that a FLOP count does not
    depend on the path a run would take (the rewrites keep the named calls it counts)."""
    if name not in KERNEL_PATHS[1:]:
        raise ValueError(f"kernels override must be 'xla' or 'cpu', got {name!r}")
    token = _kernels_override.set(name)
    try:
        yield
    finally:
        _kernels_override.reset(token)


def active_kernels(kernels: str) -> str:
    """The path a module with attribute `kernels` takes in the current trace: the override if
    one is set, else `kernels` resolved ("auto" only when a module is built on its own)."""
    override = _kernels_override.get()
    return override if override is not None else resolve_kernels(kernels)


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


def _pad_same(x: Array, pad: int) -> Array:
    """Zero-pads the two spatial axes of NHWC `x` by `pad` on each side."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _shifted_sum(padded: Array, weights: Array, height: int, width: int) -> Array:
    """sum over taps (dy, dx) of padded[:, dy:dy+height, dx:dx+width, :] * weights[dy, dx]."""
    k = weights.shape[0]
    out = None
    for dy in range(k):
        for dx in range(k):
            term = padded[:, dy:dy + height, dx:dx + width, :] * weights[dy, dx]
            out = term if out is None else out + term
    return out


@jax.custom_vjp
def _depthwise_conv_f32(x: Array, kernel: Array) -> Array:
    """x: (N, H, W, C) float32; kernel: (k, k, C) float32 -> (N, H, W, C), zero "same" padding."""
    return _shifted_sum(_pad_same(x, kernel.shape[0] // 2), kernel, x.shape[1], x.shape[2])


def _depthwise_forward(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    return _depthwise_conv_f32(x, kernel), (x, kernel)


def _depthwise_backward(residuals: tuple[Array, Array], grad: Array) -> tuple[Array, Array]:
    # Written by hand so that only x is kept for the backward pass: autodiff of the shifted
    # sum would store all k*k shifted copies of x (25 activations for a 5x5 kernel).
    x, kernel = residuals
    k = kernel.shape[0]
    pad = k // 2
    height, width = x.shape[1:3]
    grad_x = _shifted_sum(_pad_same(grad, pad), kernel[::-1, ::-1], height, width)
    padded_x = _pad_same(x, pad)
    grad_kernel = jnp.stack([
        jnp.stack([jnp.sum(padded_x[:, dy:dy + height, dx:dx + width, :] * grad, axis=(0, 1, 2))
                   for dx in range(k)])
        for dy in range(k)])
    return grad_x, grad_kernel


_depthwise_conv_f32.defvjp(_depthwise_forward, _depthwise_backward)


@jax.jit
def depthwise_conv(x: Array, kernel: Array, bias: Array) -> Array:
    """Depthwise 2-D convolution ("same" zero padding, stride 1) as a sum of shifted inputs.

    x: (N, H, W, C); kernel: (k, k, 1, C) with k odd (the HWIO layout of a grouped nn.Conv);
    bias: (C,). Returns (N, H, W, C) in x's dtype, products summed in float32.

    Equal to `lax.conv_general_dilated(..., feature_group_count=C)` up to float rounding, but
    built from k*k slices and multiply-adds that XLA fuses into a few loops. XLA:CPU lowers a
    grouped convolution and its gradient to dense C x C ones: on the toy demo's 370 ms train
    step that 5x5 layer took ~100 ms of op time.
    """
    k = kernel.shape[0]
    if kernel.shape[:3] != (k, k, 1) or k % 2 == 0 or kernel.shape[3] != x.shape[-1]:
        raise ValueError(f"depthwise_conv: kernel {kernel.shape} does not fit input {x.shape}")
    out = _depthwise_conv_f32(x.astype(jnp.float32), kernel[:, :, 0].astype(jnp.float32))
    return (out + bias.astype(jnp.float32)).astype(x.dtype)


@jax.jit
def depthwise_conv_xla(x: Array, kernel: Array, bias: Array) -> Array:
    """`depthwise_conv` as XLA's grouped convolution (feature_group_count = C), in x's dtype.

    x: (N, H, W, C); kernel: (k, k, 1, C) HWIO, k odd; bias: (C,). Returns (N, H, W, C).
    The kernel layout is that of `nn.Conv(C, (k, k), feature_group_count=C)`.
    """
    k = kernel.shape[0]
    if kernel.shape[:3] != (k, k, 1) or k % 2 == 0 or kernel.shape[3] != x.shape[-1]:
        raise ValueError(f"depthwise_conv: kernel {kernel.shape} does not fit input {x.shape}")
    pad = k // 2
    out = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), (1, 1), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])
    return out + bias.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("strides",))
def pointwise_conv(x: Array, kernel: Array, strides: int) -> Array:
    """1x1 convolution as XLA's `conv_general_dilated`, in x's dtype, without bias.

    x: (N, H, W, C_in); kernel: (1, 1, C_in, F). Returns (N, ceil(H/strides), ceil(W/strides),
    F). Named so that `ifc_jax.flops` counts it as the matrix product the "cpu" path computes.
    """
    return jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), (strides, strides), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class DepthwiseConv(nn.Module):
    """k x k depthwise convolution, "same" padding; same params as nn.Conv with
    feature_group_count = channels: `kernel` (k, k, 1, C) and `bias` (C,).

    kernels: "cpu" = `depthwise_conv` (shifted multiply-adds, products in float32 whatever the
    dtype, output in `dtype`); "xla" = `depthwise_conv_xla` (grouped convolution computed in
    `dtype`); "auto" picks by backend.
    """

    kernel_size: int
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = kaiming_uniform_a1
    bias_init: Initializer = nn.initializers.zeros
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: (N, H, W, C) -> (N, H, W, C) in `dtype`."""
        channels = x.shape[-1]
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, 1, channels), jnp.float32)
        bias = self.param("bias", self.bias_init, (channels,), jnp.float32)
        conv = depthwise_conv if active_kernels(self.kernels) == "cpu" else depthwise_conv_xla
        return conv(x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype))


class PointwiseConv(nn.Module):
    """1x1 convolution (optionally strided) computed as a matrix product over channels.

    Same params as `nn.Conv(features, (1, 1))`: `kernel` (1, 1, C_in, features) and, with
    use_bias, `bias` (features,), so checkpoints and converted weights fit either. Strides
    subsample rows and columns first, which is what a padding-free 1x1 conv does. On XLA:CPU a
    1x1 `conv_general_dilated` and its gradients cost about 3x a `dot_general` (they go through
    layout transposes), hence the "cpu" path; the "xla" path runs the 1x1 convolution itself
    (`pointwise_conv`), which GPU and TPU compilers lower to GEMMs without the strided copy.
    Both compute in `dtype`.
    """

    features: int
    strides: int = 1
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = kaiming_uniform_a1
    bias_init: Initializer = nn.initializers.zeros
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: (N, H, W, C_in) -> (N, ceil(H/strides), ceil(W/strides), features)."""
        kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features),
                            jnp.float32)
        if active_kernels(self.kernels) == "xla":
            y = pointwise_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.strides)
        else:
            if self.strides != 1:
                x = x[:, ::self.strides, ::self.strides]
            y = jnp.dot(x.astype(self.dtype), kernel[0, 0].astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


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
