"""Measured speed of one part of the system, as a short report or one JSON object.

  --what data       clips/s of the training data pipeline at the paper's settings (T=5, short
                    side 360/480, max 1333), on the built-in toy data unless --source config.
  --what encoder    median ms per clip of the four encoder communication schemes (paper sizes,
                    random weights) at 360x640 for T in 1, 5, 10, 20, 36, with GFLOPs beside.
  --what inference  frames/s of whole-video inference, near-online (T=5, S=1) and offline
                    (T=36), the paper's way and model-only, with the share of backbone,
                    encoder/decoder, tracking and RLE and the roofline (FLOPs per frame,
                    fraction of the measured matmul peak); random weights, a synthetic
                    --frames x --height x --width video, per --dtypes.
  --what train      clips/s of the jitted train step at the config's training shapes
                    (train.batch_size clips of data.num_frames frames, pad_height x pad_width),
                    with its roofline; random weights, synthetic clips with their masks.

Examples:
  python main.py benchmark --what data
  python main.py benchmark --what data --json --batches 50
  python main.py benchmark --config configs/ifc_r50_ytvis19.py --what data --source config
  python main.py benchmark --what inference --json                  # tiny model, CPU
  python main.py benchmark --what encoder --repeats 5 --plot encoder.png  # 360x640, T=1..36
  python main.py benchmark --what train --json --batches 2 --warmup 1  # tiny model, CPU
  python main.py benchmark --what inference --config configs/ifc_r50_ytvis19.py \\
      --height 360 --width 640 --frames 180 --kept-queries 10 --dtypes bfloat16 float32 --json
  python main.py benchmark --what train --config configs/ifc_r50_ytvis19.py \\
      --dtypes bfloat16 float32 --json                              # the recipe's step, GPU
"""

from __future__ import annotations

import argparse
import logging
import sys

# --what name -> (module in ifc_jax.tools, one-line description, default config). Each module
# has `run_benchmark(config, args) -> dict` and `format_result(dict) -> str`.
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "data": ("ifc_jax.benchmarks.data", "training clip pipeline, clips/s",
             "configs/ifc_r50_ytvis19.py"),
    "inference": ("ifc_jax.benchmarks.inference",
                  "whole-video inference, frames/s near-online and offline", "configs/tiny.py"),
    "encoder": ("ifc_jax.benchmarks.encoder",
                "the four encoder communication schemes, ms per clip against T",
                "configs/ifc_r50_ytvis19.py"),
    "train": ("ifc_jax.benchmarks.train",
              "the jitted train step at the recipe's shapes, clips/s", "configs/tiny.py"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="config file (default: "
                             + ", ".join(f"{v[2]} for {k}" for k, v in BENCHMARKS.items())
                             + "); data: batch size and max_instances come from it; "
                               "inference: the model")
    parser.add_argument("--what", choices=sorted(BENCHMARKS), default="data",
                        help="; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()))
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--batches", type=int, default=20,
                        help="data: batches timed; train: steps timed (default 20)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="data: batches read before timing starts; train: steps run after "
                             "compilation, before timing (default 3)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="data, train: clips per batch (default: config.train.batch_size)")
    parser.add_argument("--source", choices=("toy", "config"), default="toy",
                        help="data: the built-in toy dataset (default) or the config's dataset")
    parser.add_argument("--toy-root", default="data/toy",
                        help="where the toy dataset is (generated there if missing)")
    parser.add_argument("--height", type=int, default=None,
                        help="inference / encoder: input height (default 128 / 360)")
    parser.add_argument("--width", type=int, default=None,
                        help="inference / encoder: input width (default 224 / 640)")
    parser.add_argument("--frames", type=int, default=36,
                        help="inference: frames of the synthetic video (default 36)")
    parser.add_argument("--clip-lengths", type=int, nargs="+", default=[1, 5, 10, 20, 36],
                        help="encoder: clip lengths T to time (default 1 5 10 20 36)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="encoder: communication variants (default: all four)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="encoder: also plot time and GFLOPs against T")
    parser.add_argument("--repeats", type=int, default=1,
                        help="inference: timed predictions of the video per setting, after "
                             "one untimed warm-up (default 1)")
    parser.add_argument("--kept-queries", type=int, default=0,
                        help="inference: calibrate the random class head to keep about this "
                             "many queries per window, as a trained model does (default 0: "
                             "as initialised, about K/(K+1) of them)")
    parser.add_argument("--dtypes", nargs="+", metavar="DTYPE", default=None,
                        help="inference, train: compute dtypes to run, float32 and/or "
                             "bfloat16 (default: config.model.dtype)")
    parser.add_argument("--peak-size", type=int, default=0,
                        help="inference, train: n of the n x n x n matmul that measures the "
                             "matrix-unit peak (default: 8192 on GPU/TPU, 1024 on CPU)")
    parser.add_argument("--attention", choices=("auto", "xla", "cudnn"), default=None,
                        help="attention kernel (default: $IFC_JAX_ATTENTION or auto = cuDNN "
                             "flash attention for 16-bit compute on NVIDIA GPUs, else XLA)")


def run(args: argparse.Namespace) -> int:
    import importlib

    from ifc_jax.config import load_config
    from ifc_jax.io import UserError, print_json

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    if args.batches < 1 or args.warmup < 0 or args.batch_size < 0 or args.peak_size < 0:
        raise UserError("--batches must be >= 1, --warmup, --batch-size and --peak-size >= 0")
    if args.config is None:
        args.config = BENCHMARKS[args.what][2]
    config = load_config(args.config, args.config_overrides)
    module = importlib.import_module(BENCHMARKS[args.what][0])
    if args.attention:
        from ifc_jax.models.attention import attention_implementation

        with attention_implementation(args.attention):
            result = module.run_benchmark(config, args)
    else:
        result = module.run_benchmark(config, args)
    if args.json:
        print_json(result)
    else:
        print(module.format_result(result))
    return 0
