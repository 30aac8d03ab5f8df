"""Encoder GFLOPs of the four communication variants, counted from our traced encoders.

With no size flags it prints the paper's table (360x640 and 720x1280, T=5 and 36, M=8) with
the paper's numbers beside ours. With --height/--width/--frames/--memory it counts those
settings instead (every combination of the values given). Convention: docs/flops.md (multiply-adds,
LayerNorm 5 per element, attention = QK^T + AV, transformer encoder layers only).

Examples:
  ifc-jax flops
  ifc-jax flops --height 480 --width 864 --frames 5 10 20 --memory 4 8 16 --json
  ifc-jax flops --plot flops.png
"""

from __future__ import annotations

import argparse
import sys

VARIANTS = ("no_comm", "full_thw", "decompose_thw", "ifc")


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


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.api.reports import VARIANT_LABELS
    from ifc_jax.io import format_table, print_json

    table = api.encoder_flops_table(heights=args.height, widths=args.width, frames=args.frames,
                                    memory=args.memory, variants=args.variants, plot=args.plot)
    rows = table["rows"]
    if args.json:
        print_json({"rows": rows})
        return 0
    header = ["variant", "input", "T", "M", "GFLOPs"]
    if table["paper_table"]:
        header += ["paper", "diff"]
    lines = []
    for row in rows:
        line = [VARIANT_LABELS[row["variant"]], f"{row['height']}x{row['width']}",
                row["frames"], row["memory"] or "-", f"{row['gflops']:.2f}"]
        if table["paper_table"]:
            paper = row["paper_gflops"]
            line += [f"{paper:.2f}", f"{100 * (row['gflops'] - paper) / paper:+.2f}%"]
        lines.append(line)
    print("Encoder GFLOPs per clip (multiply-adds; transformer encoder layers only, "
          "docs/flops.md)")
    print(format_table(header, lines))
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
