"""Parameters per top-level module and forward GFLOPs per frame of a config's model.

The input size is `config.summary` (height, width, num_frames; one clip). FLOPs follow the
paper's convention (multiply-adds; norms 5 per element; see `python main.py flops`) and cover
the whole inference forward: backbone, encoder, decoder, heads. Nothing is computed: shapes
are traced abstractly, so this is instant even for R-101.

Examples:
  python main.py summary --config configs/ifc_r50_ytvis19.py
  python main.py summary --config configs/ifc_r50_ytvis19.py \
      --config.model.communication=no_comm --json
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def summarize(config) -> dict:
    """Parameter counts and GFLOPs of `config.model` at `config.summary`'s input size."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ifc_jax.config import validate_model_config
    from ifc_jax.flops import abstract_init, count_flops_by_module
    from ifc_jax.models.ifc import IFC

    validate_model_config(config.model)
    model = IFC.from_config(config.model)
    size = config.summary
    frames = jax.ShapeDtypeStruct((1, size.num_frames, size.height, size.width, 3), jnp.uint8)
    padding = jax.ShapeDtypeStruct((1, size.num_frames, size.height, size.width), jnp.bool_)
    variables = abstract_init(model, frames, padding)
    parameters = {
        name: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
        for name, tree in variables["params"].items()
    }
    flops = count_flops_by_module(model.apply, variables, frames, padding)
    gflops_per_frame = {name: sum(c.values()) / 1e9 / size.num_frames
                        for name, c in flops.items()}
    return {
        "communication": config.model.communication,
        "input": {"height": size.height, "width": size.width, "frames": size.num_frames},
        "parameters": parameters,
        "parameters_total": sum(parameters.values()),
        "parameters_without_backbone": sum(v for k, v in parameters.items() if k != "backbone"),
        "gflops_per_frame": gflops_per_frame,
        "gflops_per_frame_total": sum(gflops_per_frame.values()),
    }


def run(args: argparse.Namespace) -> int:
    from ifc_jax.config import load_config
    from ifc_jax.io import format_table, print_json

    config = load_config(args.config, args.config_overrides)
    result = summarize(config)
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
