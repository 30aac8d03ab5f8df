"""The whole system on the built-in toy dataset: data, training, tracking, scoring, pictures.

  ifc-jax demo                                   # workdir: workdirs/demo
  ifc-jax demo --workdir workdirs/demo_nocomm --config.model.communication=no_comm

Needs no download and no GPU (about 13 minutes on a 2-core CPU). Re-running resumes training
or reuses a finished run, then evaluates and renders again.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="workdirs/demo",
                        help="checkpoints, evaluation and pictures (default: workdirs/demo)")
    parser.add_argument("--config", default=None,
                        help="recipe name or config file (default: toy); --config.KEY=VALUE "
                             "overrides apply to it")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.api.demo import DEMO_RECIPE, SUMMARY_METRICS
    from ifc_jax.io import print_json

    summary = api.run_demo(args.workdir, args.config or DEMO_RECIPE, args.config_overrides)
    if args.json:
        print_json(summary)
        return 0
    metrics = summary["metrics"]
    minutes, seconds = divmod(int(summary["wall_seconds"]), 60)
    print()
    print(f"IFC ({summary['communication']}) on the toy dataset, "
          f"{summary['train_steps']} training steps, {minutes}m{seconds:02d}s in all")
    print("  " + "  ".join(f"{key} {metrics[key]:.3f}" for key in SUMMARY_METRICS))
    print(f"  metrics:   {summary['metrics_file']}")
    print(f"  results:   {summary['results_file']}")
    if summary["overlay_gif"]:
        print(f"  overlay:   {summary['overlay_gif']}")
    for path in summary["keyframes"]:
        print(f"  keyframe:  {path}")
    print(f"  TensorBoard: tensorboard --logdir {summary['workdir']}")
    return 0
