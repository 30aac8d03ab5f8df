"""Encoder GFLOPs of the four communication variants, counted from our traced encoders.

With no size flags it prints the paper's table (360x640 and 720x1280, T=5 and 36, M=8) with
the paper's numbers beside ours. With --height/--width/--frames/--memory it counts those
settings instead (every combination of the values given). Convention: SPEC §9 (multiply-adds,
LayerNorm 5 per element, attention = QK^T + AV, transformer encoder layers only).

Examples:
  python main.py flops
  python main.py flops --height 480 --width 864 --frames 5 10 20 --memory 4 8 16 --json
  python main.py flops --plot flops.png
"""

from __future__ import annotations

import argparse
import itertools
import sys

from ifc_jax.io import UserError

VARIANTS = ("no_comm", "full_thw", "decompose_thw", "ifc")
VARIANT_LABELS = {
    "no_comm": "No Comm",
    "full_thw": "Full THW",
    "decompose_thw": "Decompose T-HW",
    "ifc": "IFC",
}
PLOT_FRAMES = (1, 2, 5, 10, 15, 20, 25, 30, 36)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--height", type=int, nargs="+", help="input heights (pixels)")
    parser.add_argument("--width", type=int, nargs="+", help="input widths (pixels)")
    parser.add_argument("--frames", type=int, nargs="+", help="clip lengths T")
    parser.add_argument("--memory", type=int, nargs="+", help="IFC memory tokens M (default 8)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="communication variants to count (default: all four)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also plot GFLOPs against T for the variants (first height/width)")


def _positive(name: str, values: list[int] | None, default: list[int]) -> list[int]:
    values = default if values is None else values
    bad = [value for value in values if value < 1]
    if bad:
        raise UserError(f"--{name}: values must be >= 1, got {bad[0]}")
    return values


def _settings(args: argparse.Namespace) -> tuple[list[tuple[int, int, int, int]], bool]:
    """The (height, width, frames, memory) settings to count, and whether it's the paper table."""
    custom = any(value is not None for value in (args.height, args.width, args.frames,
                                                  args.memory))
    if not custom:
        sizes = [(360, 640), (720, 1280)]
        return [(h, w, t, 8) for (h, w) in sizes for t in (5, 36)], True
    heights = _positive("height", args.height, [360])
    widths = _positive("width", args.width, [640])
    frames = _positive("frames", args.frames, [5])
    memory = _positive("memory", args.memory, [8])
    if len(heights) != len(widths):
        raise UserError("--height and --width take the same number of values (paired sizes)")
    return [(h, w, t, m) for (h, w), t, m in
            itertools.product(zip(heights, widths, strict=True), frames, memory)], False


def run(args: argparse.Namespace) -> int:
    from ifc_jax.flops import PAPER_ENCODER_GFLOPS, encoder_flops
    from ifc_jax.io import format_table, print_json

    settings, paper_table = _settings(args)
    rows = []
    for variant in args.variants:
        # The memory size only matters for IFC; count the others once per (h, w, T).
        seen = set()
        for height, width, frames, memory in settings:
            if variant != "ifc":
                if (height, width, frames) in seen:
                    continue
                seen.add((height, width, frames))
            counts = encoder_flops(variant, height, width, frames,
                                   memory if variant == "ifc" else 0)
            row = {"variant": variant, "height": height, "width": width, "frames": frames,
                   "memory": memory if variant == "ifc" else 0,
                   "gflops": sum(counts.values()) / 1e9}
            paper = PAPER_ENCODER_GFLOPS[variant].get((height, width, frames))
            if paper is not None and (variant != "ifc" or memory == 8):
                row["paper_gflops"] = paper
            rows.append(row)

    if args.plot:
        _plot(args, args.plot)
    if args.json:
        print_json({"rows": rows})
        return 0
    header = ["variant", "input", "T", "M", "GFLOPs"]
    if paper_table:
        header += ["paper", "diff"]
    table = []
    for row in rows:
        line = [VARIANT_LABELS[row["variant"]], f"{row['height']}x{row['width']}",
                row["frames"], row["memory"] or "-", f"{row['gflops']:.2f}"]
        if paper_table:
            paper = row.get("paper_gflops")
            line += [f"{paper:.2f}", f"{100 * (row['gflops'] - paper) / paper:+.2f}%"]
        table.append(line)
    print("Encoder GFLOPs per clip (multiply-adds; transformer encoder layers only, SPEC §9)")
    print(format_table(header, table))
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _plot(args: argparse.Namespace, path: str) -> None:
    """GFLOPs against T, one line per variant, at the first requested size."""
    from ifc_jax.flops import encoder_flops
    from ifc_jax.io import new_figure, save_figure_png

    if not path.lower().endswith(".png"):
        raise UserError(f"--plot {path}: the plot is written as PNG; give a .png file name")
    height = (args.height or [360])[0]
    width = (args.width or [640])[0]
    memory = (args.memory or [8])[0]
    figure, axes = new_figure()
    for variant in args.variants:
        gflops = [sum(encoder_flops(variant, height, width, t,
                                    memory if variant == "ifc" else 0).values()) / 1e9
                  for t in PLOT_FRAMES]
        label = VARIANT_LABELS[variant] + (f" (M={memory})" if variant == "ifc" else "")
        axes.plot(PLOT_FRAMES, gflops, marker="o", label=label)
    axes.set_xlabel("frames per clip T")
    axes.set_ylabel("encoder GFLOPs per clip")
    axes.set_title(f"Encoder cost at {height}x{width}")
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure_png(figure, path)
