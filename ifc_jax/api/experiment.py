"""Training, evaluation and prediction as plain functions (what the commands and a notebook
call). Each takes a config (a recipe name, a file, or a ConfigDict) and returns data.

    from ifc_jax import api
    history, evaluation = api.train_and_evaluate("toy", "workdirs/toy")
    summary = api.evaluate(None, "workdirs/toy")         # config recorded in the workdir
    summary = api.predict_video(None, "workdirs/toy", "clip.mp4", "predictions/clip")
"""

from __future__ import annotations

import os
import time
from typing import Any

from ifc_jax.api.model import Model, device_memory, load, peak_host_rss_mib, resolve_config
from ifc_jax.config import ensure_config
from ifc_jax.io import UserError


def train(config: Any, workdir: str) -> list[dict[str, float]]:
    """Trains (or resumes) `config` in `workdir`; returns the logged metrics, one dict per
    log step (empty when the workdir was already trained to train.num_steps)."""
    from ifc_jax.train.loop import train as train_loop

    return train_loop(ensure_config(config), workdir)


def evaluate(config: Any | None, workdir: str, *, weights: str | None = None,
             output: str | None = None, split: str = "val") -> dict[str, Any]:
    """Predicts and tracks every video of the config's `split` with the workdir's latest
    checkpoint (or `weights`); writes OUTPUT/results.json and, for an annotated split,
    OUTPUT/metrics.json (OUTPUT defaults to WORKDIR/eval). Returns the summary.

    `config` None: the config the training recorded in the workdir.
    """
    output = output or os.path.join(workdir, "eval")
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"{output}: exists and is not a folder")
    return load(workdir, config, weights=weights).evaluate(output, split=split)


def train_and_evaluate(config: Any, workdir: str) -> tuple[list[dict[str, float]], dict]:
    """Trains (or resumes) `config` in `workdir`, then evaluates the result on the val split
    into WORKDIR/eval. Returns (the logged training metrics, the evaluation summary)."""
    config = ensure_config(config)
    history = train(config, workdir)
    return history, evaluate(config, workdir)


def _check_overlay_options(min_score: float, gif_frames: int, keyframes: int,
                           overlay_max_side: int, fps: float, output: str) -> None:
    if not 0.0 <= min_score <= 1.0:
        raise UserError(f"--min-score must be in [0, 1], not {min_score}")
    if gif_frames < 0 or keyframes < 0:
        raise UserError("--gif-frames and --keyframes must be >= 0")
    if overlay_max_side < 16:
        raise UserError(f"--overlay-max-side must be >= 16, not {overlay_max_side}")
    if not fps > 0:
        raise UserError(f"--fps must be > 0, not {fps}")
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"{output}: --output exists and is not a folder")


def predict_video(config: Any | None, workdir: str, video: str, output: str, *,
                  weights: str | None = None, min_score: float = 0.3, gif_frames: int = 150,
                  keyframes: int = 4, overlay_max_side: int = 640,
                  fps: float = 10.0) -> dict[str, Any]:
    """Tracks of one video file or frame folder: OUTPUT/results.json (every track), an
    overlay GIF of up to `gif_frames` frames and `keyframes` PNGs (tracks scoring at least
    `min_score`). `fps` is a frame folder's frame rate. Returns a summary of the run.

    Bad input (options, the video, the output folder) fails before the model loads.
    """
    from ifc_jax import visualize
    from ifc_jax.evaluation.results import write_results_json
    from ifc_jax.inference.video import open_video

    _check_overlay_options(min_score, gif_frames, keyframes, overlay_max_side, fps, output)
    config = resolve_config(config, workdir)
    opened = open_video(video, folder_fps=fps)
    model = Model(config, weights or workdir)  # a missing workdir fails before any build
    run = model.predict_video_input(opened)
    os.makedirs(output, exist_ok=True)
    results_path = os.path.join(output, "results.json")
    write_results_json(results_path, run.results)
    prediction = run.prediction

    begin = time.perf_counter()
    tracks = visualize.display_tracks(prediction.class_probs, prediction.segmentations,
                                      model.class_names, min_score)
    gif_indices, key_indices = visualize.overlay_frame_indices(
        opened.num_frames, gif_frames, keyframes)
    written = visualize.write_overlays(
        opened.frames_at(gif_indices + key_indices), tracks, output, gif_indices,
        key_indices, num_frames=opened.num_frames, fps=opened.fps, max_side=overlay_max_side)
    return {
        "input": video,
        "frames": opened.num_frames,
        "video_size": [opened.height, opened.width],
        "model_input_size": list(run.model_input_size),
        "video_fps": opened.fps,
        "windows": prediction.num_windows,
        "tracks": len(prediction.class_probs),
        "tracks_drawn": len(tracks),
        "min_score": min_score,
        "results": len(run.results),
        "results_file": results_path,
        "overlay_gif": written["gif"],
        "keyframes": written["keyframes"],
        "class_names_from": model.class_names_source,
        "seconds": run.seconds,
        "frames_per_second": opened.num_frames / max(run.seconds, 1e-9),
        "seconds_by_stage": prediction.seconds,
        "overlay_seconds": time.perf_counter() - begin,
        # What memory the run needed: the RLE text grows with frames x tracks by design.
        "mask_rle_chars": sum(len(rle["counts"]) for segmentations in prediction.segmentations
                              for rle in segmentations),
        "peak_host_rss_mib": peak_host_rss_mib(),
        "device_memory": device_memory(),
    }
