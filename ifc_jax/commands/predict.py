"""Predict the tracks of one video: results.json, an overlay GIF and keyframe PNGs.

`predict --workdir DIR --input VIDEO_OR_FRAME_DIR --output OUT` loads the latest checkpoint in
DIR, streams the video (an mp4/mkv/avi/webm/... file, or a folder of .jpg/.jpeg/.png frames in
name order) through the model in windows of config.inference.window_frames frames,
window_stride apart, tracks instances across windows, and writes:

  OUT/results.json          the evaluation format: video_id 1, one entry per (track, class)
                            with mean probability > config.inference.class_threshold
                            (multi_class) or per track, category ids of the dataset, one
                            compressed RLE per frame at the video's original size
  OUT/overlay.gif           up to --gif-frames frames spread over the video, each track in its
                            own colour with "class score"; only tracks scoring >= --min-score
  OUT/keyframe_NNNN.png     --keyframes evenly spaced frames at the original size, drawn alike
An earlier predict's results.json, overlay.gif and keyframe_*.png in OUT are removed (once the
new tracks are computed) before these are written; other files in OUT are left alone.

The config is the one the training recorded in DIR unless --config is given. Frames are
resized as evaluation resizes them (config.data.test_short_side / test_max_size). The video
is read twice (once for the model, once for the pictures) and never held whole in memory.
Class names and dataset category ids come from the categories of the config's dataset JSON
(val, else train) when that file exists and has config.model.num_classes of them; otherwise
classes are named "class 0".."class K-1" with ids 1..K. Progress goes to stderr about every
10 seconds.

Examples:
  ifc-jax predict --workdir workdirs/toy \\
      --input data/toy/valid/JPEGImages/valid_0000 --output predictions/valid_0000
  ifc-jax predict --workdir workdirs/r50 --input street.mp4 --output predictions/street \\
      --min-score 0.5 --config.inference.window_frames=36    # offline windows of 36 frames
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="recipe name or config file (default: DIR/config.json, recorded "
                             "by train)")
    parser.add_argument("--workdir", required=True, help="training workdir (its checkpoints)")
    parser.add_argument("--input", required=True,
                        help="a video file (mp4, mkv, avi, webm, ...) or a folder of frames")
    parser.add_argument("--output", required=True,
                        help="output folder for results.json, overlay.gif, keyframe_*.png; "
                             "those of an earlier predict there are replaced as a whole, "
                             "other files are left alone")
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


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.commands import config_or_none
    from ifc_jax.io import print_json

    summary = api.predict_video(
        config_or_none(args), args.workdir, args.input, args.output, weights=args.weights,
        min_score=args.min_score, gif_frames=args.gif_frames, keyframes=args.keyframes,
        overlay_max_side=args.overlay_max_side, fps=args.fps)
    if args.json:
        print_json(summary)
        return 0
    print(f"{summary['frames']} frames, {summary['frames_per_second']:.1f} frames/s; "
          f"{summary['tracks']} tracks ({summary['tracks_drawn']} scoring >= "
          f"{args.min_score} drawn), {summary['results']} results")
    print(f"results: {summary['results_file']}")
    if summary["overlay_gif"]:
        print(f"overlay: {summary['overlay_gif']}")
    for path in summary["keyframes"]:
        print(f"keyframe: {path}")
    return 0
