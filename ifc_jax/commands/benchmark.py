"""Measured speed of one part of the system, as a short report or one JSON object.

  --what data       clips/s of the training data pipeline at the paper's settings (T=5, short
                    side 360/480, max 1333), on the built-in toy data unless --source config.
  --what encoder    median ms per clip of the four encoder communication schemes (paper sizes,
                    random weights) at 360x640 for T in 1, 5, 10, 20, 36, with GFLOPs beside.
  --what inference  frames/s of whole-video inference, near-online (T=5, S=1) and offline
                    (T=36), the paper's way and model-only, with the share of backbone,
                    encoder/decoder, tracking and RLE and the roofline (FLOPs per frame,
                    fraction of the measured matmul peak); random weights (or a trained
                    model's: --weights), a synthetic --frames x --height x --width video,
                    per --dtypes.
  --what postprocess  host ms per output frame of tracking, masks at the output size and RLE
                    on synthetic model outputs (--tracks objects, --height x --width output,
                    default 720x1280, 10 tracks) per --threads count, beside the full-size
                    mask path it replaces.
  --what overlay    host ms per frame of predict's pictures (tracks drawn on every frame, the
                    MP4, GIF and keyframes written) on a synthetic video with --tracks toy
                    objects at --height x --width (default 720x1280), without the model,
                    per --threads count drawing frames at once.
  --what train      clips/s of the jitted train step at the config's training shapes
                    (train.batch_size clips of data.num_frames frames, pad_height x pad_width),
                    with its roofline and the input bytes it ships to the devices per step;
                    random weights, synthetic clips with their stride-4 targets.

Examples:
  ifc-jax benchmark --what data
  ifc-jax benchmark --what data --json --batches 50
  ifc-jax benchmark --config configs/ifc_r50_ytvis19.py --what data --source config
  ifc-jax benchmark --what inference --json                  # tiny model, CPU
  ifc-jax benchmark --what inference --weights workdirs/demo --json   # the demo's model
  ifc-jax benchmark --what encoder --repeats 5 --plot encoder.png  # 360x640, T=1..36
  ifc-jax benchmark --what train --json --batches 2 --warmup 1  # tiny model, CPU
  ifc-jax benchmark --what postprocess --threads 1 2 --json   # 720x1280, 10 tracks
  ifc-jax benchmark --what overlay --json                     # 720x1280, 10 tracks
  ifc-jax benchmark --what inference --config configs/ifc_r50_ytvis19.py \\
      --height 360 --width 640 --frames 180 --kept-queries 10 --dtypes bfloat16 float32 --json
  ifc-jax benchmark --what train --config configs/ifc_r50_ytvis19.py \\
      --dtypes bfloat16 float32 --json                              # the recipe's step, GPU
  ifc-jax benchmark --what inference --config.model.dtype=bfloat16 \\
      --config.model.attention=cudnn               # force cuDNN flash attention (NVIDIA GPU)
"""

from __future__ import annotations

import argparse
import logging
import sys

# --what name -> (module with format_result(dict) -> str, one-line description).
BENCHMARKS: dict[str, tuple[str, str]] = {
    "data": ("ifc_jax.benchmarks.data", "training clip pipeline, clips/s"),
    "inference": ("ifc_jax.benchmarks.inference",
                  "whole-video inference, frames/s near-online and offline"),
    "encoder": ("ifc_jax.benchmarks.encoder",
                "the four encoder communication schemes, ms per clip against T"),
    "train": ("ifc_jax.benchmarks.train",
              "the jitted train step at the recipe's shapes, clips/s and input bytes per step"),
    "postprocess": ("ifc_jax.benchmarks.postprocess",
                    "host tracking + masks + RLE on synthetic model outputs, ms per frame"),
    "overlay": ("ifc_jax.benchmarks.overlay",
                "predict's overlay pictures (drawing, MP4, GIF, keyframes), ms per frame"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="recipe name or config file (default: ifc_r50_ytvis19 for data "
                             "and encoder, tiny for inference and train); data: batch size "
                             "and max_instances come from it; the others: the model")
    parser.add_argument("--what", choices=sorted(BENCHMARKS), default="data",
                        help="; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()))
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--batches", type=int, default=20,
                        help="data: batches timed; train: steps timed (default 20)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="data: batches read before timing starts; train: steps run after "
                             "compilation, before timing (default 3)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="data, train: clips per batch (default: config.train.batch_size)")
    parser.add_argument("--source", choices=("toy", "config"), default="toy",
                        help="data: the built-in toy dataset (default) or the config's dataset")
    parser.add_argument("--toy-root", default="data/toy",
                        help="where the toy dataset is (generated there if missing)")
    parser.add_argument("--height", type=int, default=None,
                        help="inference / encoder / postprocess and overlay: input or output "
                             "height (default 128 / 360 / 720)")
    parser.add_argument("--width", type=int, default=None,
                        help="inference / encoder / postprocess and overlay: input or output "
                             "width (default 224 / 640 / 1280)")
    parser.add_argument("--frames", type=int, default=36,
                        help="inference, postprocess, overlay: frames of the synthetic video "
                             "(default 36)")
    parser.add_argument("--clip-lengths", type=int, nargs="+", default=[1, 5, 10, 20, 36],
                        help="encoder: clip lengths T to time (default 1 5 10 20 36)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="encoder: communication variants (default: all four)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="encoder: also plot time and GFLOPs against T")
    parser.add_argument("--repeats", type=int, default=None,
                        help="encoder: timed runs per clip length (default 1); inference: "
                             "videos in the timed stream per setting, after one untimed "
                             "warm-up (default 3: a video's last masks encode while the next "
                             "one runs, as in evaluate); postprocess, overlay: timed runs, "
                             "the fastest kept (default 3)")
    parser.add_argument("--trials", type=int, default=5,
                        help="inference: rounds of the end-to-end stream and the model-only "
                             "run, alternating; frames/s: the fastest of each, ratio: the "
                             "median of the rounds' ratios (default 5)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="postprocess, overlay: host thread counts to time (default 1 "
                             "2)")
    parser.add_argument("--tracks", type=int, default=10,
                        help="postprocess, overlay: objects tracked through the video (default "
                             "10)")
    parser.add_argument("--kept-queries", type=int, default=0,
                        help="inference: calibrate the random class head to keep about this "
                             "many queries per window, as a trained model does (default 0: "
                             "as initialised, about K/(K+1) of them)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="inference: time the trained model of this workdir or checkpoint "
                             "instead of random weights (config: the workdir's config.json "
                             "unless --config is given)")
    parser.add_argument("--dtypes", nargs="+", metavar="DTYPE", default=None,
                        help="inference, train: compute dtypes to run, float32 and/or "
                             "bfloat16 (default: config.model.dtype)")
    parser.add_argument("--peak-size", type=int, default=0,
                        help="inference, train: n of the n x n x n matmul that measures the "
                             "matrix-unit peak (default: 8192 on GPU/TPU, 1024 on CPU)")


def run(args: argparse.Namespace) -> int:
    import importlib

    from ifc_jax import api
    from ifc_jax.api.reports import BENCHMARK_RECIPES
    from ifc_jax.checkpoints import find_config_json
    from ifc_jax.commands import config_or_none
    from ifc_jax.config import load_config
    from ifc_jax.io import print_json

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    if args.weights and not args.config:
        # The config the training recorded with the weights (and the overrides on it).
        config_name = find_config_json(args.weights) or f"{args.weights}/config.json"
        config = config_or_none(argparse.Namespace(
            config=None, config_overrides=args.config_overrides, workdir=args.weights))
    else:
        config_name = args.config or BENCHMARK_RECIPES[args.what]
        config = load_config(config_name, args.config_overrides)
    result = api.run_benchmark(
        args.what, config, batches=args.batches,
        warmup=args.warmup, batch_size=args.batch_size, source=args.source,
        toy_root=args.toy_root, height=args.height, width=args.width, frames=args.frames,
        clip_lengths=args.clip_lengths, variants=args.variants, plot=args.plot,
        repeats=args.repeats, kept_queries=args.kept_queries, dtypes=args.dtypes or (),
        peak_size=args.peak_size, threads=tuple(args.threads), tracks=args.tracks,
        trials=args.trials, weights=args.weights)
    result["config"] = config_name
    if args.json:
        print_json(result)
    else:
        print(importlib.import_module(BENCHMARKS[args.what][0]).format_result(result))
    return 0
