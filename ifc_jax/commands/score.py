"""Score a results.json against YouTube-VIS / OVIS ground truth with the official metric.

AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl exactly as the official
YouTube-VIS evaluator computes them (docs/metric.md, quirks included); with OVIS ground
truth (per-frame `occlusion` labels) also AP/AR for slight, moderate and heavy occlusion.
Values are fractions in [0, 1]; -1 means undefined (no ground truth in that range). A COCO
ground-truth file (an `images` list: the COCO pre-training stage) is scored with pycocotools'
COCOeval instead, the results being COCO detections (what `evaluate` writes for it).
--per-category adds each category's AP (IoU 0.50:0.95, area all, 100 detections; the summary
AP is their mean over the categories with ground truth). A GT file without annotations (a
test split, e.g. the official valid.json) cannot be scored: hold out labelled videos of the
training set with `split` to score locally.

Examples:
  ifc-jax score --gt data/ytvis_2019/val_sub.json --results workdir/eval/results.json
  ifc-jax score --gt GT.json --results results.json --per-category
  ifc-jax score --gt GT.json --results results.json --json
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, metavar="GT.json",
                        help="ground truth in YouTube-VIS / OVIS format")
    parser.add_argument("--results", required=True, metavar="RESULTS.json",
                        help="predictions: a list of {video_id, category_id, score, "
                             "segmentations} with one compressed RLE (or null) per frame")
    parser.add_argument("--per-category", action="store_true",
                        help="also the AP of each category (name and id); with --json a "
                             "\"per_category\" list of {id, name, AP}")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _format_value(value: float) -> str:
    return "-1 (undefined)" if value < 0 else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.io import format_table, print_json

    scored = api.score(args.gt, args.results)
    if scored["dropped_predictions"]:
        print(f"note: {scored['dropped_predictions']} predictions in {args.results} have a "
              f"category_id not in {args.gt} and were ignored (as the official evaluator does)",
              file=sys.stderr)
    unit = "images" if scored["annotation_format"] == "coco" else "videos"
    if scored["videos_without_predictions"]:
        print(f"note: {scored['videos_without_predictions']} of {scored['videos']} {unit} in "
              f"{args.gt} have no predictions (their ground truth counts as missed)",
              file=sys.stderr)
    if args.json:
        payload = dict(scored["metrics"])
        if args.per_category:
            payload["per_category"] = scored["per_category"]
        print_json(payload)
        return 0
    kind = "YouTube-VIS metric with OVIS occlusion ranges" if scored["occlusion"] else \
        "YouTube-VIS metric"
    if unit == "images":
        kind = "COCO mask AP (pycocotools COCOeval)"
    print(f"{kind} (segm): {scored['videos']} {unit}, {scored['categories']} categories, "
          f"{scored['predictions']} predictions")
    print(format_table(["metric", "value"], [[key, _format_value(value)]
                                             for key, value in scored["metrics"].items()]))
    if args.per_category:
        print()
        print("AP per category (IoU 0.50:0.95, area all, 100 detections):")
        print(format_table(["id", "category", "AP"],
                           [[entry["id"], entry["name"], _format_value(entry["AP"])]
                            for entry in scored["per_category"]]))
    return 0
