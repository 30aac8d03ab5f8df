"""Training, evaluation and prediction as plain functions (what the commands and a notebook
call). Each takes a config (a recipe name, a file, or a ConfigDict) and returns data.

    from ifc_jax import api
    history, evaluation = api.train_and_evaluate("toy", "workdirs/toy")
    summary = api.evaluate(None, "workdirs/toy")         # config recorded in the workdir
    summary = api.predict_video(None, "workdirs/toy", "clip.mp4", "predictions/clip")
    summary = api.predict_videos(None, "workdirs/toy", ["videos/*.mp4"], "predictions")
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from ifc_jax import storage
from ifc_jax.api.model import (
    BatchProgress,
    Model,
    device_memory,
    load,
    peak_host_rss_mib,
    provenance,
    resolve_config,
)
from ifc_jax.config import ensure_config
from ifc_jax.inference.video import VideoInput
from ifc_jax.io import UserError, check_write_target


def train(config: Any, workdir: str) -> list[dict[str, float]]:
    """Trains (or resumes) `config` in `workdir`; returns the logged metrics, one dict per
    log step (empty when the workdir was already trained to train.num_steps).

    With `config.train.eval_every_steps` N > 0 the val split is evaluated every N steps
    (`EvaluateDuringTraining`)."""
    from ifc_jax.train.loop import train as train_loop

    config = ensure_config(config)
    evaluate_fn = None
    if config.train.eval_every_steps:
        evaluate_fn = EvaluateDuringTraining(config, workdir)
    return train_loop(config, workdir, evaluate_fn)


class EvaluateDuringTraining:
    """The training loop's `evaluate_fn` (ifc_jax.train.loop.EvaluateFn): the val split of
    `config.data` with `config.inference`'s windows and tracking, into
    WORKDIR/eval/step_<N>/{results.json,metrics.json}.

    Every process predicts its share of the videos (every P-th) with its own copy of the
    variables; process 0 merges the shares in dataset order, writes, scores and returns the
    metrics (plus "videos"); the others return {}. The split and the predictor are prepared
    at the first evaluation and kept: the predictor's programs take the variables as an
    argument, so later evaluations swap the variables in and compile nothing new.
    """

    def __init__(self, config: Any, workdir: str):
        from ifc_jax.data.sources import prepared_on_first_use, split_paths

        self.config = config
        self.workdir = workdir
        if not prepared_on_first_use(config.data):
            json_path, _ = split_paths(config.data, "val")
            if not storage.isfile(json_path):
                raise UserError(f"config.train.eval_every_steps: val annotations {json_path} "
                                "not found (see data/README.md)")
        self._dataset = None
        self._predictor = None

    def output_dir(self, step: int) -> str:
        return storage.join(self.workdir, "eval", f"step_{step}")

    def __call__(self, step: int, variables: dict[str, Any]) -> dict[str, float]:
        import jax

        from ifc_jax.evaluation.evaluate import load_eval_split, predict_share, write_merged
        from ifc_jax.inference.predictor import VideoPredictor
        from ifc_jax.models.ifc import IFC

        config = self.config
        shard = {"process_index": jax.process_index(), "process_count": jax.process_count()}
        if self._predictor is None:
            self._dataset = load_eval_split(config, "val", **shard)
            self._predictor = VideoPredictor.from_config(IFC.from_config(config.model), None,
                                                         config.inference)
        # On this process's first device, once per evaluation (not once per video).
        self._predictor.variables = jax.device_put(variables, jax.local_devices()[0])
        try:
            share = predict_share(config, self._predictor, self._dataset, **shard)
        finally:
            self._predictor.variables = None  # device memory back to training
        written = write_merged(self._dataset, share, self.output_dir(step),
                               run=provenance(config, self.workdir, step), **shard)
        if written is None:  # not process 0
            return {}
        return {**written.get("metrics", {}), "videos": written["videos"]}



def evaluate(config: Any | None, workdir: str, *, weights: str | None = None,
             output: str | None = None, split: str = "val") -> dict[str, Any]:
    """Predicts and tracks every video of the config's `split` with the workdir's latest
    checkpoint (or `weights`); writes OUTPUT/results.json and, for an annotated split,
    OUTPUT/metrics.json (OUTPUT defaults to WORKDIR/eval). Returns the summary.

    `config` None: the config the training recorded in the workdir.
    """
    output = output or storage.join(workdir, "eval")
    from ifc_jax.evaluation.evaluate import check_output_dir

    check_output_dir(output)  # before the model is loaded and the split predicted
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
    check_write_target(output, "--output", folder=True)


# What predict writes into --output (visualize.keyframe_name, write_overlays' gif_name and
# mp4 name, and FRAMES_DIR/visualize.frame_png_name): a new run removes these first, so no
# keyframe of an earlier video stays beside the new results.
PREDICT_OUTPUT = re.compile(r"results\.json|overlay\.gif|overlay\.mp4|keyframe_\d+\.png")
FRAMES_DIR = "frames"  # --png-frames: OUTPUT/frames/frame_NNNN.png
FRAME_PNG = re.compile(r"frame_\d+\.png")


def _remove_previous_predict_outputs(output: str) -> list[str]:
    """Removes the files an earlier predict wrote into `output` (names PREDICT_OUTPUT
    matches, and FRAME_PNG ones in OUTPUT/frames); other files stay. Returns the names
    removed (frame PNGs as "frames/NAME")."""
    if not storage.isdir(output):
        return []
    removed = sorted(name for name in storage.listdir(output)
                     if PREDICT_OUTPUT.fullmatch(name)
                     and storage.isfile(storage.join(output, name)))
    frames_dir = storage.join(output, FRAMES_DIR)
    if storage.isdir(frames_dir):
        removed += sorted(f"{FRAMES_DIR}/{name}" for name in storage.listdir(frames_dir)
                          if FRAME_PNG.fullmatch(name)
                          and storage.isfile(storage.join(frames_dir, name)))
    for name in removed:
        storage.remove(storage.join(output, *name.split("/")))
    return removed


def overlay_threads(setting: int) -> int:
    """Threads drawing predict's pictures for `inference.overlay_threads` (0: one per core
    this process may use, at most 8)."""
    from ifc_jax.host import available_cores

    return setting or min(8, available_cores())


def _write_results(run: Any, output: str) -> str:
    """Clears an earlier predict's files from `output` and writes `run`'s results.json there;
    returns that file's path."""
    from ifc_jax.evaluation.results import write_results_json

    storage.makedirs(output)
    _remove_previous_predict_outputs(output)
    results_path = storage.join(output, "results.json")
    write_results_json(results_path, run.results)
    return results_path


def _write_pictures(model: Model, opened: VideoInput, output: str, run: Any,
                    results_path: str, *, min_score: float, gif_frames: int, keyframes: int,
                    overlay_max_side: int, mp4: bool, png_frames: bool) -> dict[str, Any]:
    """Draws `run`'s tracks of `opened` into `output` (see `predict_video`); returns the
    video's summary."""
    from ifc_jax import visualize

    prediction = run.prediction
    begin = time.perf_counter()
    tracks = visualize.display_tracks(prediction.class_probs, prediction.segmentations,
                                      model.class_names, min_score)
    gif_indices, key_indices = visualize.overlay_frame_indices(
        opened.num_frames, gif_frames, keyframes)
    frames_dir = storage.join(output, FRAMES_DIR) if png_frames else None
    if frames_dir is not None:
        storage.makedirs(frames_dir)
    # The MP4 and frame PNGs draw every frame: decode them all (the second read of the
    # video); otherwise only the GIF's and keyframes' frames are converted.
    frames = (enumerate(opened.frames()) if mp4 or png_frames
              else opened.frames_at(gif_indices + key_indices))
    written = visualize.write_overlays(
        frames, tracks, output, gif_indices, key_indices, num_frames=opened.num_frames,
        fps=opened.fps, max_side=overlay_max_side,
        mp4_name="overlay.mp4" if mp4 else None, frames_dir=frames_dir,
        threads=overlay_threads(model.config.inference.overlay_threads))
    return {
        "input": opened.path,
        "output": output,
        "frames": opened.num_frames,
        "video_size": [opened.height, opened.width],
        "rotation": opened.rotation,
        "model_input_size": list(run.model_input_size),
        "video_fps": opened.fps,
        "windows": prediction.num_windows,
        "tracks": len(prediction.class_probs),
        "tracks_drawn": len(tracks),
        "min_score": min_score,
        "results": len(run.results),
        "results_file": results_path,
        "overlay_gif": written["gif"],
        "overlay_mp4": written["mp4"],
        "keyframes": written["keyframes"],
        "frames_dir": written["frames_dir"],
        "frame_pngs": written["frame_pngs"],
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


def predict_video(config: Any | None, workdir: str, video: str, output: str, *,
                  weights: str | None = None, min_score: float = 0.3, gif_frames: int = 150,
                  keyframes: int = 4, overlay_max_side: int = 640, fps: float = 10.0,
                  mp4: bool = True, png_frames: bool = False) -> dict[str, Any]:
    """Tracks of one video file or frame folder: OUTPUT/results.json (every track), an
    overlay GIF of up to `gif_frames` frames, an overlay MP4 of every frame at the video's
    frame rate (`mp4`), `keyframes` PNGs and, with `png_frames`, one PNG per frame in
    OUTPUT/frames (the pictures draw tracks scoring at least `min_score`). `fps` is a frame
    folder's frame rate. A video file's rotation metadata is honoured: frames, masks and
    sizes are upright. Returns a summary of the run.
    An earlier predict's files in OUTPUT (results.json, overlay.gif, overlay.mp4,
    keyframe_*.png, frames/frame_*.png) are replaced as a whole once the new tracks are
    computed; other files there are kept.

    Bad input (options, the video, the output folder) fails before the model loads.
    """
    from ifc_jax.inference.video import open_video

    _check_overlay_options(min_score, gif_frames, keyframes, overlay_max_side, fps, output)
    config = resolve_config(config, workdir)
    opened = open_video(video, folder_fps=fps)
    model = Model(config, weights or workdir)  # a missing workdir fails before any build
    run = model.predict_video_input(opened, None)
    results_path = _write_results(run, output)
    summary = _write_pictures(model, opened, output, run, results_path, min_score=min_score,
                              gif_frames=gif_frames, keyframes=keyframes,
                              overlay_max_side=overlay_max_side, mp4=mp4,
                              png_frames=png_frames)
    return {**summary, "input": video}


def output_names(videos: Sequence[str]) -> list[str]:
    """One output folder name per video: a file's stem ("clip" for clip.mp4) or a folder's
    name, made unique with "_2", "_3", ... when inputs share one (a/clip.mp4, b/clip.mp4)."""
    names: list[str] = []
    used: set[str] = set()
    for video in videos:
        base = os.path.basename(os.path.normpath(video))
        stem = (base if os.path.isdir(video) else os.path.splitext(base)[0]) or "video"
        name, number = stem, 2
        while name in used:
            name, number = f"{stem}_{number}", number + 1
        used.add(name)
        names.append(name)
    return names


def predict_videos(config: Any | None, workdir: str, inputs: Sequence[str], output: str, *,
                   weights: str | None = None, min_score: float = 0.3, gif_frames: int = 150,
                   keyframes: int = 4, overlay_max_side: int = 640, fps: float = 10.0,
                   mp4: bool = True, png_frames: bool = False) -> dict[str, Any]:
    """Tracks of every video the `inputs` name (video files, frame folders, folders of
    videos, glob patterns: `ifc_jax.inference.video.find_videos`), each written as
    `predict_video` writes one into OUTPUT/NAME (`output_names`: the file's stem or the
    folder's name, made unique).

    All inputs and output folders are checked before the model loads; the model loads and
    its programs compile once for all the videos (once per model input size: videos of one
    size share them). Progress (video i/n, frames of the batch, frames/s, ETA) is logged.
    Returns {"videos": [each video's summary, in order], "output", "frames" (all videos),
    "seconds", "frames_per_second", "model_input_sizes"}.
    """
    from ifc_jax.inference.video import find_videos, open_video

    _check_overlay_options(min_score, gif_frames, keyframes, overlay_max_side, fps, output)
    config = resolve_config(config, workdir)
    videos = find_videos(inputs).paths
    opened = [open_video(video, folder_fps=fps) for video in videos]
    folders = [storage.join(output, name) for name in output_names(videos)]
    for folder in folders:
        check_write_target(folder, "--output", folder=True)
    model = Model(config, weights or workdir)  # loaded (and compiled) once for all
    progress = BatchProgress([video.num_frames for video in opened])
    draw = functools.partial(_write_pictures, model, min_score=min_score,
                             gif_frames=gif_frames, keyframes=keyframes,
                             overlay_max_side=overlay_max_side, mp4=mp4, png_frames=png_frames)
    begin = time.perf_counter()
    summaries = []
    # A video's pictures are drawn on a thread of their own while the model runs on the next
    # video: on a GPU host the pictures, not the model, take most of the time. The next
    # video writes nothing before the previous one's pictures are done, so a failure there
    # stops the batch with no folder left half written; leaving the block waits for them.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ifc-pictures") as painter:
        drawing: concurrent.futures.Future | None = None
        for video, folder in zip(opened, folders, strict=True):
            run = model.predict_video_input(video, progress)
            if drawing is not None:
                summaries.append(drawing.result())
            results_path = _write_results(run, folder)
            progress.video_done()
            drawing = painter.submit(draw, video, folder, run, results_path)
        if drawing is not None:
            summaries.append(drawing.result())
    seconds = time.perf_counter() - begin
    frames = sum(video.num_frames for video in opened)
    return {"videos": summaries, "output": output, "frames": frames, "seconds": seconds,
            "frames_per_second": frames / max(seconds, 1e-9),
            "model_input_sizes": sorted({tuple(s["model_input_size"]) for s in summaries})}
