"""Measured speed of one part of the system, as a short report or one JSON object.

  --what data   clips/s of the training data pipeline at the paper's settings (T=5, short side
                360/480, max 1333), on the built-in toy data unless --source config.

Examples:
  python main.py benchmark --what data
  python main.py benchmark --what data --json --batches 50
  python main.py benchmark --config configs/ifc_r50_ytvis19.py --what data --source config
"""

from __future__ import annotations

import argparse
import logging
import sys

DEFAULT_CONFIG = "configs/ifc_r50_ytvis19.py"

# --what name -> (module in ifc_jax.tools, one-line description). Each module has
# `run_benchmark(config, args) -> dict` and `format_result(dict) -> str`.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "data": ("ifc_jax.tools.benchmark_data", "training clip pipeline, clips/s"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"config file (default {DEFAULT_CONFIG}); batch size and "
                             "max_instances come from it")
    parser.add_argument("--what", choices=sorted(BENCHMARKS), default="data",
                        help="; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()))
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--batches", type=int, default=20, help="batches timed (default 20)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="batches read before timing starts (default 3)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="clips per batch (default: config.train.batch_size)")
    parser.add_argument("--source", choices=("toy", "config"), default="toy",
                        help="data: the built-in toy dataset (default) or the config's dataset")
    parser.add_argument("--toy-root", default="data/toy",
                        help="where the toy dataset is (generated there if missing)")


def run(args: argparse.Namespace) -> int:
    import importlib

    from ifc_jax.config_loading import load_config
    from ifc_jax.errors import UserError
    from ifc_jax.tools.output import print_json

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    if args.batches < 1 or args.warmup < 0 or args.batch_size < 0:
        raise UserError("--batches must be >= 1, --warmup and --batch-size >= 0")
    config = load_config(args.config, args.config_overrides)
    module = importlib.import_module(BENCHMARKS[args.what][0])
    result = module.run_benchmark(config, args)
    if args.json:
        print_json(result)
    else:
        print(module.format_result(result))
    return 0
