"""FLOPs counted from the traced JAX program, in the paper's convention (docs/flops.md).

The convention is fvcore's, which the IFC paper used:
* 1 FLOP = 1 multiply-add. Matrix products (`dot_general`: linear layers, QK^T, AV, einsums)
  count batch x M x N x K; convolutions count out_elements x kernel_area x in_channels/groups.
* LayerNorm and GroupNorm (with affine) count 5 per input element. They are recognised as the
  named `jit` calls of `ifc_jax.models.layers`, like its `depthwise_conv` (shifted
  multiply-adds, counted as the grouped convolution it computes: kernel area per output) and
  `pointwise_conv` (a 1x1 convolution, counted as the matrix product it is: `matmul`).
* Everything else (bias adds, softmax, activations, residual adds, scaling, dropout) is free.

The count is taken from `jax.make_jaxpr` on abstract shapes: nothing is computed or allocated,
so a 720x1280, T=36 full space-time encoder (a 33,120 x 33,120 attention) counts in a second.
Attention is traced with its XLA implementation (QK^T and AV as `dot_general`s) even where a
run would pick cuDNN's fused kernel, whose custom call the walker could not see into.
Backward passes count like forward ones: `jax.value_and_grad(f)` traces to the forward and
the transposed `dot_general`s / convolutions of the gradient (see `benchmarks/roofline.py`).
Likewise the model's convolutions and max-pool are traced with their "cpu" kernel path
(`config.model.kernels`, docs/model.md#kernels) whichever a run takes, so that a count does
not depend on the backend; the two paths compute the same convolutions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

NORM_FLOPS_PER_ELEMENT = {"layer_norm": 5, "group_norm": 5}


def _sub_jaxprs(params: dict[str, Any]) -> Iterable[jax_core.Jaxpr]:
    """The jaxprs nested in an equation's params (jit, custom_jvp/vjp, remat, ...)."""
    for value in params.values():
        candidates = value if isinstance(value, tuple | list) else (value,)
        for candidate in candidates:
            if isinstance(candidate, jax_core.ClosedJaxpr):
                yield candidate.jaxpr
            elif isinstance(candidate, jax_core.Jaxpr):
                yield candidate


def _dot_general_macs(eqn: jax_core.JaxprEqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [size for axis, size in enumerate(rhs) if axis not in (*rhs_contract, *rhs_batch)]
    return math.prod(lhs) * math.prod(rhs_free)


def _conv_macs(eqn: jax_core.JaxprEqn) -> int:
    kernel = eqn.invars[1].aval.shape
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) axes of the kernel
    per_output = kernel[rhs_spec[1]] * math.prod(kernel[axis] for axis in rhs_spec[2:])
    return math.prod(eqn.outvars[0].aval.shape) * per_output


def _eqn_flops(eqn: jax_core.JaxprEqn, counts: Counter, multiplier: int) -> None:
    name = eqn.primitive.name
    if name == "dot_general":
        counts["matmul"] += multiplier * _dot_general_macs(eqn)
    elif name == "conv_general_dilated":
        counts["conv"] += multiplier * _conv_macs(eqn)
    elif name in ("jit", "pjit") and eqn.params.get("name") == "depthwise_conv":
        kernel = eqn.invars[1].aval.shape  # (k, k, 1, C)
        counts["conv"] += multiplier * math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel[:3])
    elif (name in ("jit", "pjit") and eqn.params.get("name") == "pointwise_conv"
          and len(eqn.invars) == 2):
        # The forward call (x, kernel (1, 1, C_in, F)): C_in per output element, like the dot
        # of the "cpu" path. Its transposes (gradients) fall through to their contents.
        kernel = eqn.invars[1].aval.shape
        counts["matmul"] += multiplier * math.prod(eqn.outvars[0].aval.shape) * kernel[2]
    elif name in ("jit", "pjit") and eqn.params.get("name") in NORM_FLOPS_PER_ELEMENT:
        norm = eqn.params["name"]
        elements = math.prod(eqn.invars[0].aval.shape)
        counts[norm] += multiplier * NORM_FLOPS_PER_ELEMENT[norm] * elements
    elif name == "scan":
        count_jaxpr(eqn.params["jaxpr"].jaxpr, counts, multiplier * eqn.params["length"])
    elif name == "cond":
        # Count the most expensive branch: an upper bound, like fvcore on traced graphs.
        branch_counts = [count_jaxpr(branch.jaxpr) for branch in eqn.params["branches"]]
        heaviest = max(branch_counts, key=lambda c: sum(c.values()))
        for key, value in heaviest.items():
            counts[key] += multiplier * value
    elif name == "while":
        raise NotImplementedError("FLOPs of a while loop depend on its trip count")
    else:
        for sub in _sub_jaxprs(eqn.params):
            count_jaxpr(sub, counts, multiplier)


def count_jaxpr(jaxpr: jax_core.Jaxpr, counts: Counter | None = None,
                multiplier: int = 1) -> Counter:
    """Adds up FLOPs by category ('matmul', 'conv', 'layer_norm', 'group_norm') in a jaxpr."""
    counts = Counter() if counts is None else counts
    for eqn in jaxpr.eqns:
        _eqn_flops(eqn, counts, multiplier)
    return counts


def trace(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> jax_core.ClosedJaxpr:
    """The jaxpr of `fn(*args, **kwargs)`, attention traced with its XLA implementation and
    the convolutions / max-pool with their "cpu" kernel path (the count is then the same for
    any `config.model.kernels`, gradients included)."""
    from ifc_jax.models.attention import attention_implementation
    from ifc_jax.models.layers import kernels_override

    with attention_implementation("xla"), kernels_override("cpu"):
        return jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Counter:
    """FLOPs of `fn(*args, **kwargs)` by category; args may be jax.ShapeDtypeStruct."""
    return count_jaxpr(trace(fn, *args, **kwargs).jaxpr)


def count_flops_by_module(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Counter]:
    """FLOPs of a Flax `apply` grouped by top-level submodule (from the trace's name stack).

    Work done directly in the root module's `__call__` is grouped under its named scope if it
    has one, else under "(root)".
    """
    closed = trace(fn, *args, **kwargs)
    by_module: dict[str, Counter] = {}
    for eqn in closed.jaxpr.eqns:
        # e.g. "IFC/IFC.frame_features/backbone/res2_0/conv1": skip the root and the
        # "Class.method" scopes of the root's methods.
        parts = [part for part in str(eqn.source_info.name_stack).split("/")[1:]
                 if "." not in part]
        module = parts[0] if parts else "(root)"
        _eqn_flops(eqn, by_module.setdefault(module, Counter()), 1)
    return {module: counts for module, counts in by_module.items() if sum(counts.values())}


def abstract_init(module: Any, *args: Any, **kwargs: Any) -> Any:
    """The variables of `module.init(...)` as ShapeDtypeStructs, without computing them."""
    from ifc_jax.models.attention import attention_implementation

    with attention_implementation("xla"):  # shapes only: any kernel will do, XLA's traces
        return jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a, **kwargs), *args)


def stride32_size(height: int, width: int) -> tuple[int, int]:
    """The res5 feature size of an input, ceil at every stride-2 step (docs/model.md#backbone)."""
    return -(-height // 32), -(-width // 32)


def encoder_flops(
    communication: str,
    height: int,
    width: int,
    frames: int,
    memory: int = 8,
    hidden_dim: int = 256,
    num_heads: int = 8,
    dim_feedforward: int = 2048,
    num_layers: int = 3,
) -> Counter:
    """FLOPs of one clip through an encoder variant at an input size.

    The setting of the paper's encoder table: docs/flops.md#encoder-table.
    """
    from ifc_jax.models.encoder import build_encoder

    encoder = build_encoder(
        communication,
        num_layers=num_layers,
        num_heads=num_heads,
        dim_feedforward=dim_feedforward,
        dropout=0.0,
        num_memory_tokens=memory,
        dtype=jnp.float32,
        name=None,
    )
    h, w = stride32_size(height, width)
    tokens = jax.ShapeDtypeStruct((1, frames, h * w, hidden_dim), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, frames, h * w), jnp.bool_)
    variables = abstract_init(encoder, tokens, tokens, mask)
    return count_flops(encoder.apply, variables, tokens, tokens, mask)


# The paper's encoder comparison (slides, "Experiments - Encoder Comparison"), GFLOPs.
PAPER_ENCODER_GFLOPS: dict[str, dict[tuple[int, int, int], float]] = {
    "no_comm": {(360, 640, 5): 5.17, (360, 640, 36): 37.23,
                (720, 1280, 5): 24.62, (720, 1280, 36): 177.29},
    "full_thw": {(360, 640, 5): 6.94, (360, 640, 36): 148.70,
                 (720, 1280, 5): 50.63, (720, 1280, 36): 1815.38},
    "decompose_thw": {(360, 640, 5): 8.33, (360, 640, 36): 60.24,
                      (720, 1280, 5): 36.73, (720, 1280, 36): 265.50},
    "ifc": {(360, 640, 5): 5.52, (360, 640, 36): 39.73,
            (720, 1280, 5): 25.05, (720, 1280, 36): 180.39},
}
PAPER_MEMORY_TOKENS = 8
