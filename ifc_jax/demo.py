"""`python main.py demo`: the whole system on the built-in toy dataset, on a CPU.

1. generate the toy dataset (YouTube-VIS format) unless it is there;
2. train `configs/toy.py` (resuming if the workdir has checkpoints; live progress);
3. evaluate on the toy val split with near-online tracking: WORKDIR/eval/results.json and
   metrics.json;
4. render the val video with the most objects as an overlay GIF and keyframe PNGs;
5. print AP / AP50 / AP75 / AR1 / AR10, the wall time and where every output is.
Steps 2 and 3 are `ifc_jax.train.loop.train_and_evaluate(config, workdir)`.
Re-running reuses what is there: the dataset, the checkpoints (training resumes or is
skipped when done), and redoes evaluation and rendering. Ctrl-C during training leaves a
checkpoint that the next run resumes from.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from typing import Any

log = logging.getLogger("ifc_jax.demo")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO_ROOT, "configs", "toy.py")
SUMMARY_METRICS = ("AP", "AP50", "AP75", "AR1", "AR10")


def _busiest_video(dataset: Any) -> Any:
    """The val video with the most annotated tracks (ties: the longest, then the first)."""
    return max(dataset.videos, key=lambda video: (len(video.tracks), video.length))


def _render(config_path: str, overrides: list[str], workdir: str, frame_folder: str,
            output_dir: str) -> dict[str, Any]:
    """Runs the `predict` command on one frame folder; returns its JSON summary."""
    from ifc_jax import cli

    argv = ["predict", "--config", config_path, "--workdir", workdir, "--input", frame_folder,
            "--output", output_dir, "--json", *[f"--{override}" for override in overrides]]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(argv)
    if code != 0:
        raise RuntimeError(f"rendering {frame_folder} failed (exit {code})")
    return json.loads(stdout.getvalue())


def run_demo(workdir: str, overrides: list[str], config_path: str = DEMO_CONFIG
             ) -> dict[str, Any]:
    """Runs the demo; returns the summary it prints."""
    from ifc_jax.config import load_config
    from ifc_jax.data import sources
    from ifc_jax.train.loop import train_and_evaluate

    begin = time.perf_counter()
    config = load_config(config_path, overrides)
    log.info("[1/4] toy dataset in %s", config.data.root)
    val = sources.load_split(config.data, "val")  # generates the toy dataset if needed
    log.info("[2-3/4] training %s for %d steps in %s, then evaluating on %d val videos "
             "(window %d, stride %d)", os.path.relpath(config_path), config.train.num_steps,
             workdir, len(val.videos), config.inference.window_frames,
             config.inference.window_stride)
    history, evaluation = train_and_evaluate(config, workdir)
    video = _busiest_video(val)
    log.info("[4/4] rendering val video %s (%d objects)", video.name, len(video.tracks))
    rendered = _render(config_path, overrides, workdir,
                       os.path.join(val.frames_dir, video.name),
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
