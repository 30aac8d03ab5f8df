"""Measured speed of the four encoder communication schemes against clip length T.

The measured counterpart of `python main.py flops`: each variant's jitted encoder (random
weights, the paper's sizes by default: C=256, 8 heads, FFN 2048, 3 layers, M=8) runs on the
stride-32 tokens of a height x width input for each T; the time is the median of `repeats`
runs after a warm-up call (compilation excluded), with the counted GFLOPs beside it.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifc_jax.flops import encoder_flops, stride32_size
from ifc_jax.models.encoder import build_encoder

log = logging.getLogger("ifc_jax.benchmark")

VARIANTS = ("no_comm", "full_thw", "decompose_thw", "ifc")


def time_encoder(variant: str, height: int, width: int, frames: int, memory: int,
                 hidden_dim: int, num_heads: int, dim_feedforward: int, repeats: int,
                 dtype: jnp.dtype) -> float:
    """Median seconds of one forward of a clip through the variant's encoder."""
    encoder = build_encoder(variant, num_layers=3, num_heads=num_heads,
                            dim_feedforward=dim_feedforward, dropout=0.0,
                            num_memory_tokens=memory, dtype=dtype, name=None)
    h, w = stride32_size(height, width)
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randn(1, frames, h * w, hidden_dim), dtype)
    position = jnp.asarray(rng.randn(1, frames, h * w, hidden_dim), dtype)
    mask = jnp.zeros((1, frames, h * w), bool)
    variables = jax.jit(encoder.init)(jax.random.key(0), tokens, position, mask)
    forward = jax.jit(lambda v, x, p, m: encoder.apply(v, x, p, m).frame_tokens)
    jax.block_until_ready(forward(variables, tokens, position, mask))  # compile
    seconds = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(forward(variables, tokens, position, mask))
        seconds.append(time.perf_counter() - begin)
    return statistics.median(seconds)


def benchmark_encoders(height: int = 360, width: int = 640,
                       frames: Sequence[int] = (1, 5, 10, 20, 36),
                       variants: Sequence[str] = VARIANTS, memory: int = 8,
                       hidden_dim: int = 256, num_heads: int = 8, dim_feedforward: int = 2048,
                       repeats: int = 5, dtype: str = "float32") -> dict:
    """Rows of {variant, frames, milliseconds, gflops} and the ratios the paper discusses."""
    compute_dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    rows = []
    for variant in variants:
        for num_frames in frames:
            seconds = time_encoder(variant, height, width, num_frames, memory, hidden_dim,
                                   num_heads, dim_feedforward, repeats, compute_dtype)
            counts = encoder_flops(variant, height, width, num_frames,
                                   memory if variant == "ifc" else 0, hidden_dim, num_heads,
                                   dim_feedforward)
            rows.append({"variant": variant, "frames": num_frames,
                         "milliseconds": 1000 * seconds,
                         "milliseconds_per_frame": 1000 * seconds / num_frames,
                         "gflops": sum(counts.values()) / 1e9})
            log.info("encoder %s T=%d: %.2f ms", variant, num_frames, 1000 * seconds)
    by_key = {(row["variant"], row["frames"]): row["milliseconds"] for row in rows}
    ratios = {}
    if "ifc" in variants and "no_comm" in variants:
        ratios["ifc_over_no_comm"] = {t: by_key[("ifc", t)] / by_key[("no_comm", t)]
                                      for t in frames}
    # Per-frame time at the longest clip over that at the shortest: 1 for a cost linear in T,
    # above 1 when it grows faster (full space-time attention is quadratic in T).
    if len(frames) > 1:
        shortest, longest = min(frames), max(frames)
        ratios["per_frame_growth"] = {
            variant: (by_key[(variant, longest)] / longest)
            / (by_key[(variant, shortest)] / shortest) for variant in variants}
    return {
        "device": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__,
        "input": {"height": height, "width": width, "memory": memory,
                  "hidden_dim": hidden_dim, "num_heads": num_heads,
                  "dim_feedforward": dim_feedforward, "dtype": dtype, "repeats": repeats},
        "rows": rows,
        "ratios": ratios,
    }


def plot_encoder_benchmark(result: dict, path: str) -> None:
    """Time and GFLOPs against T, one line per variant, as a PNG (written atomically)."""
    from ifc_jax.io import new_figure, save_figure_png

    labels = {"no_comm": "No Comm", "full_thw": "Full THW",
              "decompose_thw": "Decompose T-HW", "ifc": "IFC"}
    figure, (time_axes, flops_axes) = new_figure(columns=2, size=(10, 4))
    for variant in dict.fromkeys(row["variant"] for row in result["rows"]):
        rows = [row for row in result["rows"] if row["variant"] == variant]
        frames = [row["frames"] for row in rows]
        time_axes.plot(frames, [row["milliseconds"] for row in rows], marker="o",
                       label=labels.get(variant, variant))
        flops_axes.plot(frames, [row["gflops"] for row in rows], marker="o",
                        label=labels.get(variant, variant))
    size = result["input"]
    time_axes.set_title(f"measured, {result['device']} ({size['dtype']})")
    time_axes.set_ylabel("encoder time per clip (ms, median)")
    flops_axes.set_title(f"counted, {size['height']}x{size['width']}")
    flops_axes.set_ylabel("encoder GFLOPs per clip")
    for axes in (time_axes, flops_axes):
        axes.set_xlabel("frames per clip T")
        axes.grid(alpha=0.3)
        axes.legend()
    save_figure_png(figure, path)


def format_result(result: dict) -> str:
    from ifc_jax.io import format_table

    size = result["input"]
    frames = sorted({row["frames"] for row in result["rows"]})
    by_key = {(row["variant"], row["frames"]): row for row in result["rows"]}
    variants = list(dict.fromkeys(row["variant"] for row in result["rows"]))
    header = ["variant"] + [f"T={t} ms" for t in frames] + [f"T={frames[-1]} GFLOPs"]
    rows = [[variant] + [f"{by_key[(variant, t)]['milliseconds']:.1f}" for t in frames]
            + [f"{by_key[(variant, frames[-1])]['gflops']:.2f}"] for variant in variants]
    lines = [f"encoder time per clip at {size['height']}x{size['width']} on "
             f"{result['device']} ({size['dtype']}, median of {size['repeats']})",
             format_table(header, rows)]
    for t, ratio in result["ratios"].get("ifc_over_no_comm", {}).items():
        lines.append(f"IFC / No Comm at T={t}: {ratio:.2f}x")
    growth = result["ratios"].get("per_frame_growth", {})
    if growth:
        lines.append(f"time per frame at T={frames[-1]} over T={frames[0]} (1 = linear in T): "
                     + ", ".join(f"{variant} {value:.2f}x" for variant, value in growth.items()))
    return "\n".join(lines)
