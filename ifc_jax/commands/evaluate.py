"""Evaluate a trained model on the config's validation split.

`evaluate --workdir DIR` loads the latest checkpoint in DIR/checkpoints, runs near-online (or
offline) inference with tracking on every video of the config's val split, and writes
DIR/eval/results.json (the format the YouTube-VIS / OVIS servers accept) and, when the split
has annotations, DIR/eval/metrics.json (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs,
ARm, ARl as fractions). A COCO split (config.data.dataset coco, the image pre-training
stage) is written as COCO detections and scored by pycocotools' COCOeval, same keys. The
config is the one the training recorded in DIR unless --config is given.

Examples:
  ifc-jax evaluate --workdir workdirs/toy
  ifc-jax evaluate --config ifc_r50_ytvis19:offline --workdir workdirs/r50   # T=36 windows
  ifc-jax evaluate --config ifc_r50_ytvis19 --workdir workdirs/r50_eval \\
      --weights weights/ifc_r50_ytvis19                  # converted weights (`convert`)
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="recipe name or config file (default: DIR/config.json, recorded "
                             "by train)")
    parser.add_argument("--workdir", required=True, help="training workdir (its checkpoints)")
    parser.add_argument("--weights", help="weights to use instead of WORKDIR's checkpoints")
    parser.add_argument("--output", help="results folder (default: WORKDIR/eval)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.commands import config_or_none
    from ifc_jax.evaluation.ytvis_metric import METRIC_KEYS
    from ifc_jax.io import format_table, print_json

    summary = api.evaluate(config_or_none(args), args.workdir, weights=args.weights,
                           output=args.output)
    if args.json:
        print_json(summary)
        return 0
    if summary["annotation_format"] == "coco":  # one-frame videos: COCO images
        print(f"{summary['videos']} images, {summary['frames_per_second']:.1f} images/s; "
              f"COCO detections: {summary['results']}")
    else:
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
