"""Import pretrained PyTorch weights: the authors' IFC checkpoints or ImageNet ResNets.

`ifc-jax convert --from FILE --to DIR [--config CFG]` reads FILE without PyTorch, maps
every tensor onto the variables of CFG's model (checking each name and shape) and writes DIR,
an orbax checkpoint of {'params', 'batch_stats'} plus DIR/conversion.json (what was converted
and ignored). DIR works wherever weights are taken: `evaluate --weights DIR`,
`predict --weights DIR` and `train --config.train.init_from=DIR`.

Sources (pick the config that matches; docs/pretrained_weights.md has the details):
  IFC R-50 / R-101 YouTube-VIS .pth (detectron2)   configs/ifc_r50_ytvis19.py / ifc_r101_ytvis19.py
  ImageNetPretrained/torchvision/R-50.pkl, torchvision resnet50 .pth   configs/ifc_r50_ytvis19.py
  ImageNetPretrained/MSRA/R-101.pkl (Caffe2 names)                     configs/ifc_r101_ytvis19.py
A backbone-only file fills only the backbone: use it with --config.train.init_from.

Examples:
  ifc-jax convert --from model_final_r50.pth --to weights/ifc_r50_ytvis19
  ifc-jax evaluate --config configs/ifc_r50_ytvis19.py --workdir workdirs/r50_eval \\
      --weights weights/ifc_r50_ytvis19
  ifc-jax convert --from R-101.pkl --to weights/r101_imagenet \\
      --config configs/ifc_r101_ytvis19.py
  ifc-jax convert --from coco_r50.pth --to weights/ifc_r50_coco \\
      --config.model.num_classes=80          # then --config.train.init_from=weights/ifc_r50_coco
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="FILE",
                        help="a torch .pth (zip format) or detectron2 .pkl checkpoint")
    parser.add_argument("--to", dest="output", required=True, metavar="DIR",
                        help="the orbax checkpoint folder to write (must not exist)")
    parser.add_argument("--config", default="ifc_r50_ytvis19",
                        help="recipe or config file whose model the weights are for "
                             "(default: ifc_r50_ytvis19)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DIR if it is an earlier output of convert (holds "
                             "conversion.json); anything else is refused, nothing deleted")
    parser.add_argument("--json", action="store_true",
                        help="print the conversion report as one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.config import load_config
    from ifc_jax.io import print_json

    config = load_config(args.config, args.config_overrides)
    config_name = " ".join([args.config, *(f"--{item}" for item in args.config_overrides)])
    report = api.convert_weights(args.source, args.output, config, overwrite=args.overwrite,
                                 config_name=config_name)
    for warning in report.pop("warnings"):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print_json(report)
        return 0
    written = report["written_arrays"]
    print(f"converted {report['converted_keys']} tensors of {args.source} "
          f"({report['flavour']}, {report['container']})")
    print(f"wrote {report['output']}: {written['params']} params and "
          f"{written['batch_stats']} batch_stats arrays, {report['written_values']:,} values")
    if report["synthesized"]:
        print(f"added mean 0 / var 1-eps for {len(report['synthesized']) // 2} Caffe2 affine "
              "BatchNorms (scale * x + bias exactly)")
    ignored = report["ignored_keys"]
    if ignored:
        print(f"ignored {len(ignored)} keys:")
        for key, reason in ignored.items():
            print(f"  {key}: {reason}")
    if report["ignored_top_level"]:
        print(f"ignored top-level entries: {', '.join(report['ignored_top_level'])}")
    print(f"report: {os.path.join(report['output'], 'conversion.json')}")
    return 0
