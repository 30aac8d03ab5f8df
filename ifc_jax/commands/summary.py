"""Parameters per top-level module and forward GFLOPs per frame of a config's model.

The input size is `config.summary` (height, width, num_frames; one clip). FLOPs follow the
paper's convention (multiply-adds; norms 5 per element; see `ifc-jax flops`) and cover
the whole inference forward: backbone, encoder, decoder, heads. Nothing is computed: shapes
are traced abstractly, so this is instant even for R-101.

Examples:
  ifc-jax summary --config ifc_r50_ytvis19
  ifc-jax summary --config ifc_r50_ytvis19 \
      --config.model.communication=no_comm --json
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="recipe name or config file, e.g. tiny or configs/tiny.py")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.config import load_config
    from ifc_jax.io import format_table, print_json

    result = api.summarize(load_config(args.config, args.config_overrides))
    if args.json:
        print_json(result)
        return 0
    size = result["input"]
    print(f"{args.config}: IFC ({result['communication']}), input {size['height']}x"
          f"{size['width']}, T={size['frames']}")
    rows = [[name, f"{count:,}", f"{result['gflops_per_frame'].get(name, 0.0):.3f}"]
            for name, count in result["parameters"].items()]
    rows += [[name, "-", f"{gflops:.3f}"] for name, gflops in result["gflops_per_frame"].items()
             if name not in result["parameters"]]
    rows.append(["total", f"{result['parameters_total']:,}",
                 f"{result['gflops_per_frame_total']:.3f}"])
    print(format_table(["module", "parameters", "GFLOPs/frame"], rows))
    print(f"parameters without backbone: {result['parameters_without_backbone']:,}")
    return 0
