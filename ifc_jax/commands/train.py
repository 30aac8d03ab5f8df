"""Train IFC: `python main.py train --config CFG --workdir DIR [--config.KEY=VALUE ...]`.

Resumes automatically from the latest checkpoint in DIR/checkpoints. SIGTERM (preemption)
saves a checkpoint and exits cleanly; Ctrl-C stops without saving beyond the last periodic
checkpoint. TensorBoard event files go to DIR.

Examples:
  python main.py train --config configs/toy.py --workdir workdirs/toy
  python main.py train --config configs/ifc_r50_ytvis19.py --workdir workdirs/r50 \\
      --config.train.init_from=workdirs/coco_r50
  # one process per host of a multi-host job (TPU pods / SLURM: jax finds the cluster):
  python main.py train --config configs/ifc_r50_ytvis19.py --workdir gs://bucket/r50 \\
      --config.distributed.mode=auto
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, e.g. configs/toy.py")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints and TensorBoard logs go here; reused to resume")


def run(args: argparse.Namespace) -> int:
    from ifc_jax.config import load_config
    from ifc_jax.train.loop import train

    config = load_config(args.config, args.config_overrides)
    history = train(config, args.workdir)
    if history:
        last = history[-1]
        print(f"trained to step {last['step']}: loss {last['loss']:.4f}; "
              f"checkpoints in {args.workdir}/checkpoints")
    return 0
