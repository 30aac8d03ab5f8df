r"""Draws the README's architecture picture: docs/images/architecture.png.

  .venv/bin/python docs/figures/architecture.py [OUTPUT.png]

Boxes and arrows only (matplotlib); the labels name our modules (`ifc_jax/models/`) and the
tensor shapes of docs/model.md for a T-frame clip.
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "docs", "images", "architecture.png")

PER_FRAME = "#dbe9f6"  # runs on each frame alone
CROSS_FRAME = "#fde2c8"  # mixes the frames of a clip
HEADS = "#dff2dc"


def box(axes, x: float, y: float, width: float, height: float, text: str, colour: str,
        size: float = 8.5) -> None:
    """A rounded box with its lower-left corner at (x, y) and centred text."""
    axes.add_patch(FancyBboxPatch((x, y), width, height,
                                  boxstyle="round,pad=0.02,rounding_size=0.08",
                                  facecolor=colour, edgecolor="#444444", linewidth=0.9))
    axes.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=size)


def arrow(axes, start: tuple[float, float], end: tuple[float, float], text: str = "",
          style: str = "-|>", offset: tuple[float, float] = (0.0, 0.12)) -> None:
    """An arrow from start to end with an optional label near its middle."""
    axes.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=10,
                                   linewidth=1.0, color="#333333"))
    if text:
        axes.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                  ha="center", va="bottom", fontsize=7, color="#333333")


def draw(path: str) -> None:
    figure, axes = plt.subplots(figsize=(12, 5.2))
    axes.set_xlim(0, 12)
    axes.set_ylim(0, 5.2)
    axes.axis("off")

    # Per-frame feature extraction: the same weights on every frame.
    for k, dy in enumerate((0.24, 0.12, 0.0)):
        box(axes, 0.1 + dy, 3.0 - dy, 1.2, 0.9, "frame t" if k == 2 else "", PER_FRAME)
    axes.text(0.8, 4.25, "clip of T frames\n(B, T, H, W, 3)", ha="center", fontsize=8)
    box(axes, 1.9, 2.95, 1.55, 1.0, "ResNet-50/101\nfrozen BN\nres3 · res4 · res5", PER_FRAME)
    arrow(axes, (1.45, 3.45), (1.9, 3.45))
    box(axes, 3.95, 2.95, 1.5, 1.0, "input_proj 1×1\n+ sine position\n(T, h·w, C)", PER_FRAME)
    arrow(axes, (3.45, 3.45), (3.95, 3.45), "res5")

    # The IFC encoder: Encode-Receive per frame, Gather-Communicate across frames.
    axes.add_patch(FancyBboxPatch((5.85, 2.35), 2.6, 2.55, boxstyle="round,pad=0.03",
                                  facecolor="white", edgecolor="#888888", linestyle="--"))
    axes.text(7.15, 4.95, "IFC encoder, × 3 blocks", ha="center", fontsize=8.5,
              fontweight="bold")
    box(axes, 6.0, 3.65, 2.3, 0.95,
        "Encode-Receive\nself-attention within a frame:\nh·w pixels + M memory tokens",
        PER_FRAME, size=7.5)
    box(axes, 6.0, 2.5, 2.3, 0.95,
        "Gather-Communicate\nmemory slot m attends\nacross the T frames",
        CROSS_FRAME, size=7.5)
    arrow(axes, (6.3, 3.65), (6.3, 3.45))
    axes.text(7.15, 3.52, "M memory tokens", ha="center", va="center", fontsize=6.5)
    arrow(axes, (8.0, 3.45), (8.0, 3.65))
    arrow(axes, (5.45, 3.45), (6.0, 4.1))

    # Decoder and heads.
    box(axes, 9.0, 3.55, 2.2, 1.05,
        "Transformer decoder\nN clip queries attend to\nT·h·w frame + T·M memory tokens",
        CROSS_FRAME, size=7.5)
    arrow(axes, (8.45, 4.1), (9.0, 4.1))
    box(axes, 9.0, 2.3, 1.0, 0.8, "class MLP\n(N, K+1)", HEADS, size=7.5)
    box(axes, 10.2, 2.3, 1.0, 0.8, "kernel MLP\n(N, C)", HEADS, size=7.5)
    arrow(axes, (9.5, 3.55), (9.5, 3.1))
    arrow(axes, (10.7, 3.55), (10.7, 3.1))

    # Instance-agnostic mask features and the dynamic 1x1 convolution.
    box(axes, 3.95, 0.55, 2.4, 1.0,
        "spatial decoder (per frame)\nencoder tokens + res4 + res3\n→ features at stride 8",
        PER_FRAME, size=7.5)
    arrow(axes, (2.7, 2.95), (4.2, 1.55), "res3, res4", offset=(-0.45, 0.0))
    arrow(axes, (5.95, 2.4), (5.6, 1.55), "frame tokens", offset=(-0.65, -0.1))
    box(axes, 7.3, 0.55, 2.3, 1.0,
        "dynamic 1×1 conv\nmask = Σ_c kernel[n, c] · F[t, c]\n(same kernel in all T frames)",
        HEADS, size=7.5)
    arrow(axes, (6.35, 1.05), (7.3, 1.05), "(T, C, H/8, W/8)", offset=(0.0, 0.06))
    arrow(axes, (10.7, 2.3), (9.1, 1.55))
    box(axes, 10.1, 0.55, 1.6, 1.0, "masks\n(N, T, H/8, W/8)\none track per query", HEADS,
        size=7.5)
    arrow(axes, (9.6, 1.05), (10.1, 1.05))

    # Legend.
    for k, (colour, label) in enumerate(((PER_FRAME, "each frame alone"),
                                         (CROSS_FRAME, "across the frames of a clip"),
                                         (HEADS, "heads"))):
        axes.add_patch(FancyBboxPatch((0.2, 1.5 - 0.42 * k), 0.35, 0.25,
                                      boxstyle="round,pad=0.01", facecolor=colour,
                                      edgecolor="#444444", linewidth=0.8))
        axes.text(0.7, 1.62 - 0.42 * k, label, va="center", fontsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    draw(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUTPUT)
