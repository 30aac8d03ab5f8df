"""The whole system on the built-in toy dataset, on a CPU: `run_demo(workdir)`.

1. generate the toy dataset (YouTube-VIS format) unless it is there;
2. train the `toy` recipe (resuming if the workdir has checkpoints; live progress);
3. evaluate on the toy val split with near-online tracking: WORKDIR/eval/results.json and
   metrics.json;
4. render the val video with the most objects as an overlay GIF and keyframe PNGs in
   WORKDIR/demo_video;
5. return AP / AP50 / AP75 / AR1 / AR10, the wall time and where every output is.
Re-running reuses what is there: the dataset, the checkpoints (training resumes or is skipped
when done), and redoes evaluation and rendering. Ctrl-C during training leaves a checkpoint
that the next run resumes from.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ifc_jax.api.experiment import predict_video, train_and_evaluate
from ifc_jax.config import load_config

log = logging.getLogger("ifc_jax.demo")

DEMO_RECIPE = "toy"
SUMMARY_METRICS = ("AP", "AP50", "AP75", "AR1", "AR10")


def _busiest_video(dataset: Any) -> Any:
    """The val video with the most annotated tracks (ties: the longest, then the first)."""
    return max(dataset.videos, key=lambda video: (len(video.tracks), video.length))


def run_demo(workdir: str = "workdirs/demo", config: str = DEMO_RECIPE,
             overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Runs the demo with `config` (a recipe name or file) and `overrides` ('a.b=value');
    returns its summary."""
    from ifc_jax.data import sources

    begin = time.perf_counter()
    config = load_config(config, overrides)
    log.info("[1/4] toy dataset in %s", config.data.root)
    val = sources.load_split(config.data, "val")  # generates the toy dataset if needed
    log.info("[2-3/4] training for %d steps in %s, then evaluating on %d val videos "
             "(window %d, stride %d)", config.train.num_steps, workdir, len(val.videos),
             config.inference.window_frames, config.inference.window_stride)
    history, evaluation = train_and_evaluate(config, workdir)
    video = _busiest_video(val)
    log.info("[4/4] rendering val video %s (%d objects)", video.name, len(video.tracks))
    rendered = predict_video(config, workdir, os.path.join(val.frames_dir, video.name),
                             os.path.join(workdir, "demo_video"))
    return {
        "workdir": workdir,
        "communication": config.model.communication,
        "train_steps": config.train.num_steps,
        "final_train_loss": history[-1]["loss"] if history else None,
        "metrics": {key: evaluation["metrics"][key] for key in SUMMARY_METRICS},
        "metrics_file": evaluation["metrics_file"],
        "results_file": evaluation["results"],
        "overlay_gif": rendered["overlay_gif"],
        "keyframes": rendered["keyframes"],
        "wall_seconds": time.perf_counter() - begin,
    }
