"""Hold out labelled videos of a YouTube-VIS / OVIS training JSON for local validation.

The official valid / test files have no annotations, so AP can only be computed locally on
videos held out of the training set. `split` picks --fraction of the videos (or --count of
them) with --seed: the video ids are sorted, shuffled with numpy's default_rng(SEED) and the
first ones held out, so the same file and seed always give the same split. Whole videos go
to one side; each output keeps the input's categories (and info, licenses, ...), its videos
and their annotations, and the `file_names` unchanged, so the training frame folder serves
both. Then train on TRAIN_OUT and evaluate / score on VAL_OUT (data/README.md, "Local
validation").

Examples:
  ifc-jax split --annotations data/ytvis_2019/train.json --fraction 0.1 --seed 0 \\
      --train-out data/ytvis_2019/train_sub.json --val-out data/ytvis_2019/val_sub.json
  ifc-jax split --annotations train.json --count 200 --train-out a.json --val-out b.json
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, metavar="TRAIN.json",
                        help="the labelled YouTube-VIS / OVIS JSON to split (not modified)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--fraction", type=float,
                      help="share of the videos to hold out, between 0 and 1 (at least one "
                           "video)")
    size.add_argument("--count", type=int, help="number of videos to hold out")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the choice of videos (default 0)")
    parser.add_argument("--train-out", required=True, metavar="TRAIN_SUB.json",
                        help="where the remaining videos go (the new training file)")
    parser.add_argument("--val-out", required=True, metavar="VAL_SUB.json",
                        help="where the held-out videos go (the labelled validation file)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.io import print_json

    summary = api.split_annotations(args.annotations, args.train_out, args.val_out,
                                    fraction=args.fraction, count=args.count, seed=args.seed)
    if args.json:
        print_json(summary)
        return 0
    train, val = summary["train"], summary["val"]
    print(f"held out {val['videos']} of {summary['videos']} videos of {summary['source']} "
          f"(seed {summary['seed']})")
    print(f"  val:   {val['path']} ({val['videos']} videos, {val['annotations']} annotations)")
    print(f"  train: {train['path']} ({train['videos']} videos, {train['annotations']} "
          "annotations)")
    print("train on the first and evaluate on the second with --config.data.train_json / "
          "val_json, val_frames = the training frame folder (data/README.md, Local validation)")
    return 0
