"""Train a model: checkpoints, TensorBoard logs and train_metrics.jsonl in --workdir.

`train --config CFG --workdir DIR` trains CFG (a recipe name such as `toy` or
`ifc_r50_ytvis19`, or a config file) and records the resolved config as DIR/config.json, which
`evaluate` and `predict` use when their --config is left out. Re-running with the same DIR
resumes from its latest checkpoint with the same data order and losses. SIGTERM (preemption)
or a first Ctrl-C saves a checkpoint at the next step boundary and exits with status 0; a
second Ctrl-C aborts at once (the last periodic checkpoint remains).

Examples:
  ifc-jax train --config toy --workdir workdirs/toy
  ifc-jax train --config ifc_r50_ytvis19 --workdir workdirs/r50 \\
      --config.train.init_from=weights/ifc_r50_coco --config.model.dtype bfloat16
  # a multi-process job (one process per TPU VM host; under SLURM one task per GPU, since
  # jax gives each SLURM task the GPU of its local rank): jax finds the cluster; the workdir
  # must be a place every process sees, a bucket or a shared folder (README, "Launching
  # train"):
  ifc-jax train --config ifc_r50_ytvis19 --workdir gs://BUCKET/runs/r50 \\
      --config.data.root gs://BUCKET/data/ytvis_2019 --config.distributed.mode=auto
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="a recipe name (toy, tiny, ifc_r50_ytvis19, ...) or config file, "
                             "optionally with :VARIANT")
    parser.add_argument("--workdir", required=True,
                        help="checkpoints and TensorBoard logs go here (a folder or "
                             "gs://BUCKET/PATH); reused to resume")


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.config import load_config

    history = api.train(load_config(args.config, args.config_overrides), args.workdir)
    if history:
        last = history[-1]
        print(f"trained to step {last['step']}: loss {last['loss']:.4f}; "
              f"checkpoints in {args.workdir}/checkpoints")
    return 0
