"""Predict the tracks of one video: results.json, an overlay GIF and keyframe PNGs.

`python main.py predict --config CFG --workdir DIR --input VIDEO_OR_FRAME_DIR --output OUT`
loads the latest checkpoint in DIR, streams the video (an mp4/mkv/avi/webm/... file, or a
folder of .jpg/.jpeg/.png frames in name order) through the model in windows of
config.inference.window_frames frames, window_stride apart, tracks instances across windows,
and writes:

  OUT/results.json          the evaluation format: video_id 1, one entry per (track, class)
                            with mean probability > config.inference.class_threshold
                            (multi_class) or per track, category ids of the dataset, one
                            compressed RLE per frame at the video's original size
  OUT/overlay.gif           up to --gif-frames frames spread over the video, each track in its
                            own colour with "class score"; only tracks scoring >= --min-score
  OUT/keyframe_NNNN.png     --keyframes evenly spaced frames at the original size, drawn alike

Frames are resized as evaluation resizes them (config.data.test_short_side / test_max_size).
The video is read twice (once for the model, once for the pictures) and never held whole in
memory. Class names and dataset category ids come from the categories of the config's
dataset JSON (val, else train) when that file exists and has config.model.num_classes of them;
otherwise classes are named "class 0".."class K-1" with ids 1..K. Progress goes to stderr
about every 10 seconds.

Examples:
  python main.py predict --config configs/toy.py --workdir workdirs/toy \\
      --input data/toy/valid/JPEGImages/valid_0000 --output predictions/valid_0000
  python main.py predict --config configs/ifc_r50_ytvis19.py --workdir workdirs/r50 \\
      --input street.mp4 --output predictions/street --min-score 0.5 \\
      --config.inference.window_frames=36          # offline windows of 36 frames
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("ifc_jax.predict")

VIDEO_ID = 1  # results.json's video_id (YouTube-VIS ids start at 1)
PROGRESS_SECONDS = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, e.g. configs/toy.py")
    parser.add_argument("--workdir", required=True, help="training workdir (its checkpoints)")
    parser.add_argument("--input", required=True,
                        help="a video file (mp4, mkv, avi, webm, ...) or a folder of frames")
    parser.add_argument("--output", required=True,
                        help="output folder for results.json, overlay.gif, keyframe_*.png")
    parser.add_argument("--weights", help="weights to use instead of WORKDIR's checkpoints")
    parser.add_argument("--min-score", type=float, default=0.3,
                        help="tracks drawn in the pictures score at least this (default 0.3); "
                             "results.json keeps all")
    parser.add_argument("--gif-frames", type=int, default=150,
                        help="most frames in overlay.gif, spread evenly (default 150; 0: none)")
    parser.add_argument("--keyframes", type=int, default=4,
                        help="keyframe PNGs, evenly spaced (default 4; 0: none)")
    parser.add_argument("--overlay-max-side", type=int, default=640,
                        help="long side of the GIF's frames in pixels (default 640)")
    parser.add_argument("--fps", type=float, default=10.0,
                        help="frame rate of a frame folder, for the GIF's timing (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _check_arguments(args: argparse.Namespace) -> None:
    from ifc_jax.io import UserError

    if not 0.0 <= args.min_score <= 1.0:
        raise UserError(f"--min-score must be in [0, 1], not {args.min_score}")
    if args.gif_frames < 0 or args.keyframes < 0:
        raise UserError("--gif-frames and --keyframes must be >= 0")
    if args.overlay_max_side < 16:
        raise UserError(f"--overlay-max-side must be >= 16, not {args.overlay_max_side}")
    if not args.fps > 0:
        raise UserError(f"--fps must be > 0, not {args.fps}")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserError(f"{args.output}: --output exists and is not a folder")


def class_names_and_ids(config: Any) -> tuple[list[str], list[int], str | None]:
    """(names, dataset category ids) of the model's K classes, and the JSON they came from.

    From the categories of the config's dataset JSON (val, else train) when it exists and has
    K categories; otherwise "class k" and ids k + 1 (None as the source).
    """
    from ifc_jax.data.sources import split_paths
    from ifc_jax.data.ytvis import CategoryMap

    num_classes = int(config.model.num_classes)
    for split in ("val", "train"):
        json_path, _ = split_paths(config.data, split)
        if not os.path.isfile(json_path):
            continue
        try:
            with open(json_path, encoding="utf-8") as stream:
                categories = json.load(stream).get("categories") or []
            categories_map = CategoryMap.from_categories(categories)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("%s: categories not readable (%s); classes get generic names",
                        json_path, err)
            break
        if categories_map.num_classes != num_classes:
            log.warning("%s has %d categories but config.model.num_classes=%d; classes get "
                        "generic names", json_path, categories_map.num_classes, num_classes)
            break
        return list(categories_map.names), list(categories_map.dataset_ids), json_path
    return ([f"class {k}" for k in range(num_classes)], list(range(1, num_classes + 1)), None)


def peak_host_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_memory() -> dict[str, int] | None:
    """bytes_in_use and peak_bytes_in_use of the first device (None on CPU: there the device
    memory is this process's host memory)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {key: int(stats[key]) for key in ("bytes_in_use", "peak_bytes_in_use")
            if key in stats}


def with_progress(frames: Iterable[Any], num_frames: int) -> Iterator[Any]:
    """Passes `frames` through, logging frames read, frames/s and peak memory about every 10 s."""
    begin = last = time.perf_counter()
    for count, frame in enumerate(frames, start=1):
        yield frame
        now = time.perf_counter()
        if now - last >= PROGRESS_SECONDS and count < num_frames:
            device = device_memory()
            log.info("predict: %d/%d frames (%.0f%%), %.1f frames/s, peak host RSS %.0f MiB%s",
                     count, num_frames, 100.0 * count / num_frames, count / (now - begin),
                     peak_host_rss_mib(),
                     f", device peak {device['peak_bytes_in_use'] / 2**20:.0f} MiB"
                     if device and "peak_bytes_in_use" in device else "")
            last = now


def run(args: argparse.Namespace) -> int:
    from ifc_jax import visualize
    from ifc_jax.config import load_config
    from ifc_jax.evaluation.results import result_options, video_results, write_results_json
    from ifc_jax.inference.loading import load_trained_model
    from ifc_jax.inference.predictor import VideoPredictor
    from ifc_jax.inference.video import inference_size, open_video
    from ifc_jax.io import print_json

    _check_arguments(args)
    config = load_config(args.config, args.config_overrides)
    options = result_options(config.inference)
    video = open_video(args.input, folder_fps=args.fps)  # bad input fails before the model
    height, width = inference_size(video.height, video.width,
                                   int(config.data.test_short_side),
                                   int(config.data.test_max_size))
    class_names, category_ids, names_source = class_names_and_ids(config)
    model, variables = load_trained_model(config, args.weights or args.workdir)
    inference = config.inference
    predictor = VideoPredictor(model, variables, window_frames=int(inference.window_frames),
                               window_stride=int(inference.window_stride),
                               match_threshold=float(inference.match_threshold))
    log.info("predict: %s, %d frames %dx%d (WxH) at %.2f fps, model input %dx%d",
             args.input, video.num_frames, video.width, video.height, video.fps, width, height)

    begin = time.perf_counter()
    prediction = predictor.predict(with_progress(video.resized_frames(height, width),
                                                 video.num_frames),
                                   video.num_frames, (height, width), (video.height, video.width))
    results = video_results(VIDEO_ID, prediction.class_probs, prediction.segmentations,
                            category_ids, **options)
    os.makedirs(args.output, exist_ok=True)
    results_path = os.path.join(args.output, "results.json")
    write_results_json(results_path, results)
    predict_seconds = time.perf_counter() - begin
    log.info("predict: %d frames in %.1f s (%.1f frames/s), %d tracks, %d results -> %s",
             video.num_frames, predict_seconds, video.num_frames / predict_seconds,
             len(prediction.class_probs), len(results), results_path)

    begin = time.perf_counter()
    tracks = visualize.display_tracks(prediction.class_probs, prediction.segmentations,
                                      class_names, args.min_score)
    gif_indices, key_indices = visualize.overlay_frame_indices(
        video.num_frames, args.gif_frames, args.keyframes)
    written = visualize.write_overlays(
        video.frames_at(gif_indices + key_indices), tracks, args.output, gif_indices,
        key_indices, num_frames=video.num_frames, fps=video.fps,
        max_side=args.overlay_max_side)
    overlay_seconds = time.perf_counter() - begin

    summary = {
        "input": args.input,
        "frames": video.num_frames,
        "video_size": [video.height, video.width],
        "model_input_size": [height, width],
        "video_fps": video.fps,
        "windows": prediction.num_windows,
        "tracks": len(prediction.class_probs),
        "tracks_drawn": len(tracks),
        "results": len(results),
        "results_file": results_path,
        "overlay_gif": written["gif"],
        "keyframes": written["keyframes"],
        "class_names_from": names_source,
        "seconds": predict_seconds,
        "frames_per_second": video.num_frames / max(predict_seconds, 1e-9),
        "seconds_by_stage": prediction.seconds,
        "overlay_seconds": overlay_seconds,
        # What memory the run needed: the RLE text grows with frames x tracks by design.
        "mask_rle_chars": sum(len(rle["counts"]) for segmentations in prediction.segmentations
                              for rle in segmentations),
        "peak_host_rss_mib": peak_host_rss_mib(),
        "device_memory": device_memory(),
    }
    if args.json:
        print_json(summary)
        return 0
    print(f"{video.num_frames} frames, {summary['frames_per_second']:.1f} frames/s; "
          f"{len(prediction.class_probs)} tracks ({len(tracks)} scoring >= {args.min_score} "
          f"drawn), {len(results)} results")
    print(f"results: {results_path}")
    if written["gif"]:
        print(f"overlay: {written['gif']}")
    for path in written["keyframes"]:
        print(f"keyframe: {path}")
    return 0
