"""Evaluate a trained model on the config's validation split.

`python main.py evaluate --config CFG --workdir DIR` loads the latest checkpoint in
DIR/checkpoints, runs near-online (or offline) inference with tracking on every video of
`config.data`'s val split, and writes DIR/eval/results.json (the format the YouTube-VIS / OVIS
servers accept) and, when the split has annotations, DIR/eval/metrics.json (AP, AP50, AP75,
APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl as fractions).

Examples:
  python main.py evaluate --config configs/toy.py --workdir workdirs/toy
  python main.py evaluate --config configs/ifc_r50_ytvis19.py --workdir workdirs/r50 \\
      --config.inference.window_frames=36          # offline: one window per video
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, e.g. configs/toy.py")
    parser.add_argument("--workdir", required=True, help="training workdir (its checkpoints)")
    parser.add_argument("--weights", help="weights to use instead of WORKDIR's checkpoints")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from ifc_jax.config import load_config
    from ifc_jax.evaluation.ytvis_metric import METRIC_KEYS
    from ifc_jax.inference.evaluate import evaluate_split
    from ifc_jax.io import format_table, print_json

    config = load_config(args.config, args.config_overrides)
    summary = evaluate_split(config, args.weights or args.workdir,
                             os.path.join(args.workdir, "eval"))
    if args.json:
        print_json(summary)
        return 0
    print(f"{summary['videos']} videos, {summary['frames']} frames, "
          f"{summary['frames_per_second']:.1f} frames/s; results: {summary['results']}")
    if "metrics" in summary:
        metrics = summary["metrics"]
        print(format_table(["metric", "value"],
                           [[key, f"{metrics[key]:.4f}"] for key in METRIC_KEYS]))
        print(f"metrics: {summary['metrics_file']}")
    else:
        print("the split has no annotations: submit results.json to the evaluation server")
    return 0
