"""Roofline figures for the benchmarks: counted model FLOPs, measured matrix-unit peak, fraction.

Conventions (two, kept apart):
* The paper's FLOPs (docs/flops.md, `ifc_jax/flops.py`, `main.py summary`) are multiply-adds
  (MACs), with norms at 5 per element. They are reported here as `gmacs_*`.
* Hardware peaks count a multiply-add as 2 FLOPs, so the roofline uses
  FLOPs = 2 x (matmul + convolution MACs) of the traced program. Norms, softmax and other
  elementwise work do not run on the matrix units and are left out of the roofline count
  (they are < 1% of the MACs of the IFC model).
* The peak is measured, not taken from a data sheet: the median time of a jitted n x n x n
  matrix product (2 n^3 FLOPs) at the model's compute dtype and JAX's default precision (on
  NVIDIA GPUs float32 products may run as TF32, as the model's do).

Counts come from the very programs that are timed, traced abstractly (nothing computed):
* inference: the predictor's jitted per-chunk frame encoder (backbone, input projection,
  position) and per-window clip forward (encoder, decoder, heads, softmax), multiplied by the
  number of chunks and windows the video needs;
* training: the whole jitted train step (`jax.value_and_grad` of the set criterion, so the
  backward pass's transposed matrix products are counted as traced, plus the optimiser). The
  Hungarian solver is not counted: the count traces the host matcher (a callback) whatever
  `train.matcher` is, because the device solver is a while loop with a data-dependent trip
  count; its cost-matrix products are counted.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifc_jax.flops import count_jaxpr, trace

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_dtypes(dtypes: tuple[str, ...]) -> tuple[str, ...]:
    """The compute dtypes asked for, checked (UserError on an unknown one), duplicates out."""
    from ifc_jax.io import UserError

    unknown = [dtype for dtype in dtypes if dtype not in DTYPES]
    if unknown:
        raise UserError(f"--dtypes: unknown {unknown[0]!r}; expected {' or '.join(DTYPES)}")
    return tuple(dict.fromkeys(dtypes))


def model_info(model_config: Any) -> dict[str, Any]:
    """The model facts a benchmark result records beside its figures."""
    return {"backbone_depth": int(model_config.backbone.depth),
            "hidden_dim": int(model_config.hidden_dim),
            "num_queries": int(model_config.num_queries),
            "num_classes": int(model_config.num_classes),
            "communication": str(model_config.communication)}


def device_info() -> dict[str, Any]:
    """The default device as the benchmarks report it (memory peak where the backend has it)."""
    device = jax.devices()[0]
    memory = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {"platform": device.platform, "kind": device.device_kind,
            "count": jax.device_count(), "cpu_count": os.cpu_count(),
            "jax_version": jax.__version__,
            "peak_bytes_in_use": (memory or {}).get("peak_bytes_in_use")}


def matrix_flops(counts: Counter) -> int:
    """Hardware FLOPs (2 per multiply-add) of the matmul and convolution MACs in `counts`."""
    return 2 * (int(counts.get("matmul", 0)) + int(counts.get("conv", 0)))


def default_peak_size(platform: str) -> int:
    """Matrix size for the peak measurement: big enough to saturate the matrix units."""
    return 8192 if platform in ("gpu", "tpu") else 1024


def measure_matmul_peak(dtype: str = "bfloat16", size: int = 0, repeats: int = 0
                        ) -> dict[str, Any]:
    """Measured FLOP/s of a jitted (size x size) @ (size x size) product on the default device.

    Args:
      dtype: "float32" or "bfloat16" (inputs and output).
      size: n; 0 picks `default_peak_size` for the platform.
      repeats: timed products after two warm-up calls; 0 picks 20 on an accelerator, 5 on CPU.
    Returns:
      {"dtype", "size", "seconds" (median of one product), "flop_per_s", "tflop_per_s"}.
    """
    platform = jax.devices()[0].platform
    size = size or default_peak_size(platform)
    repeats = repeats or (20 if platform in ("gpu", "tpu") else 5)
    keys = jax.random.split(jax.random.key(0))
    lhs, rhs = (jax.random.normal(key, (size, size), DTYPES[dtype]) for key in keys)
    product = jax.jit(jnp.matmul)
    for _ in range(2):  # compile, then one more for clocks and caches
        jax.block_until_ready(product(lhs, rhs))
    seconds = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(product(lhs, rhs))
        seconds.append(time.perf_counter() - begin)
    median = statistics.median(seconds)
    flop_per_s = 2 * size**3 / median
    return {"dtype": dtype, "size": size, "repeats": repeats, "seconds": median,
            "flop_per_s": flop_per_s, "tflop_per_s": flop_per_s / 1e12}


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def predictor_counts(predictor: Any, height: int, width: int) -> dict[str, Counter]:
    """MAC counts of one call of each of the predictor's two jitted device programs.

    Returns {"chunk": frame features of `chunk_frames` frames (one chunk),
             "window": one window's clip forward (encoder, decoder, heads)}.
    """
    variables = _abstract(predictor.variables)

    def frame_inputs(count: int) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
        return (jax.ShapeDtypeStruct((count, height, width, 3), jnp.uint8),
                jax.ShapeDtypeStruct((count, height, width), jnp.bool_))

    window = predictor.window_frames
    features = jax.eval_shape(predictor.encode_frames, variables, *frame_inputs(window))
    frame_valid = jax.ShapeDtypeStruct((window,), jnp.bool_)
    chunk_inputs = frame_inputs(predictor.chunk_frames)
    return {
        "chunk": count_jaxpr(trace(predictor.encode_frames, variables, *chunk_inputs).jaxpr),
        "window": count_jaxpr(trace(predictor.run_window, variables, features,
                                    frame_valid).jaxpr),
    }


def video_flops(counts: dict[str, Counter], num_frames: int, chunk_frames: int,
                num_windows: int) -> dict[str, float]:
    """FLOPs of predicting a `num_frames` video: ceil(frames / C) chunks and the windows.

    Returns hardware FLOPs ("flops", 2 per MAC, matrix work) and the paper's multiply-adds
    ("macs", norms included), in total and per frame.
    """
    chunks = -(-num_frames // chunk_frames)
    macs = chunks * sum(counts["chunk"].values()) + num_windows * sum(counts["window"].values())
    flops = chunks * matrix_flops(counts["chunk"]) + num_windows * matrix_flops(counts["window"])
    return {"flops": float(flops), "flops_per_frame": flops / num_frames,
            "gmacs_per_frame": macs / num_frames / 1e9,
            "gflops_per_frame": flops / num_frames / 1e9}


def train_step_counts(step_fn: Callable[..., Any], state: Any, batch: Any) -> Counter:
    """MAC counts of one call of a (jitted) train step, traced on abstract shapes."""
    return count_jaxpr(trace(step_fn, _abstract(state), _abstract(batch)).jaxpr)


def achieved(flops: float, seconds: float, peak: dict[str, Any]) -> dict[str, float]:
    """Achieved FLOP/s of `flops` done in `seconds` and its fraction of the measured peak."""
    flop_per_s = flops / seconds if seconds > 0 else 0.0
    return {"tflop_per_s": flop_per_s / 1e12,
            "fraction_of_peak": flop_per_s / peak["flop_per_s"] if peak["flop_per_s"] else 0.0}


def format_peak(peak: dict[str, Any]) -> str:
    """One line: the measured peak and how it was measured."""
    return (f"matrix-unit peak (measured, {peak['dtype']} {peak['size']}^3 matmul, median of "
            f"{peak['repeats']}): {peak['tflop_per_s']:.2f} TFLOP/s; FLOPs below = "
            "2 x multiply-adds of matmuls and convolutions, counted from the traced programs")
