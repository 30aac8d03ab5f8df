"""Predict the tracks of your videos: results.json, overlay GIF and MP4, keyframe PNGs.

`predict --workdir DIR --input VIDEO_OR_FRAME_DIR --output OUT` loads the latest checkpoint in
DIR, streams the video (an mp4/mov/mkv/avi/webm/... file, or a folder of .jpg/.jpeg/.png
frames in name order) through the model in windows of config.inference.window_frames frames,
window_stride apart, tracks instances across windows, and writes:

  OUT/results.json          the evaluation format: video_id 1, one entry per (track, class)
                            with mean probability > config.inference.class_threshold
                            (multi_class) or per track, category ids of the dataset, one
                            compressed RLE per frame at the video's (upright) size
  OUT/overlay.gif           up to --gif-frames frames spread over the video, each track in its
                            own colour with "class score"; only tracks scoring >= --min-score
  OUT/overlay.mp4           every frame drawn alike, at the video's size and frame rate
                            (H.264, or MPEG-4 Part 2 where PyAV lacks libx264; a size of odd
                            height or width is padded by one pixel); --no-mp4: none
  OUT/keyframe_NNNN.png     --keyframes evenly spaced frames at the original size, drawn alike
  OUT/frames/frame_NNNN.png with --png-frames: every frame, drawn alike
An earlier predict's results.json, overlay.gif, overlay.mp4, keyframe_*.png and
frames/frame_*.png in OUT are removed (once the new tracks are computed) before these are
written; other files in OUT are left alone.

Several videos in one call: give several --input paths, a folder of videos (video files and/or
frame sub-folders; a folder holding images directly is one video), or a glob pattern (quoted
or not: a pattern is expanded here). Then each video gets its own folder OUT/NAME, named after
the file's stem or the folder's name ("clip", "clip_2", ... when names repeat). The model
loads and compiles once for all of them (once per model input size); every input and output
folder is checked before anything loads, so a bad one fails at once with one error line.

Phone videos: a video file's rotation metadata (display matrix) is honoured, so the model, the
masks and the pictures see the frames upright, as a player shows them.

The config is the one the training recorded in DIR unless --config is given. Frames are
resized as evaluation resizes them (config.data.test_short_side / test_max_size). Each video
is read twice (once for the model, once for the pictures) and never held whole in memory.
Class names and dataset category ids come from the categories of the config's dataset JSON
(val, else train) when that file exists and has config.model.num_classes of them; otherwise
classes are named "class 0".."class K-1" with ids 1..K. Progress (video i/n, frames done of
all the videos, frames/s, ETA) goes to stderr about every 10 seconds.

Examples:
  ifc-jax predict --workdir workdirs/toy \\
      --input data/toy/valid/JPEGImages/valid_0000 --output predictions/valid_0000
  ifc-jax predict --workdir workdirs/r50 --input street.mp4 --output predictions/street \\
      --min-score 0.5 --config.inference.window_frames=36    # offline windows of 36 frames
  ifc-jax predict --workdir workdirs/r50 --input 'phone/*.mp4' --output predictions/phone
      # -> predictions/phone/<stem>/{results.json,overlay.mp4,...}, compiled once
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="recipe name or config file (default: DIR/config.json, recorded "
                             "by train)")
    parser.add_argument("--workdir", required=True, help="training workdir (its checkpoints)")
    parser.add_argument("--input", required=True, nargs="+", action="extend",
                        metavar="VIDEO",
                        help="a video file (mp4, mov, mkv, avi, webm, ...) or a folder of "
                             "frames; or several, a folder of videos, or a glob pattern such "
                             "as 'clips/*.mp4' (then one output folder per video)")
    parser.add_argument("--output", required=True,
                        help="output folder for results.json, overlay.gif, overlay.mp4, "
                             "keyframe_*.png (of several videos: OUTPUT/NAME for each); "
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
    parser.add_argument("--no-mp4", dest="mp4", action="store_false",
                        help="write no overlay.mp4 (it draws every frame of the video)")
    parser.add_argument("--png-frames", action="store_true",
                        help="also write every drawn frame as frames/frame_NNNN.png")
    parser.add_argument("--overlay-max-side", type=int, default=640,
                        help="long side of the GIF's frames in pixels (default 640)")
    parser.add_argument("--fps", type=float, default=10.0,
                        help="frame rate of a frame folder, for the GIF's and MP4's timing "
                             "(default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _print_video(summary: dict, min_score: float) -> None:
    print(f"{summary['frames']} frames, {summary['frames_per_second']:.1f} frames/s; "
          f"{summary['tracks']} tracks ({summary['tracks_drawn']} scoring >= "
          f"{min_score} drawn), {summary['results']} results")
    print(f"results: {summary['results_file']}")
    if summary["overlay_gif"]:
        print(f"overlay: {summary['overlay_gif']}")
    if summary["overlay_mp4"]:
        print(f"overlay: {summary['overlay_mp4']}")
    for path in summary["keyframes"]:
        print(f"keyframe: {path}")
    if summary["frames_dir"]:
        print(f"frames: {summary['frame_pngs']} PNGs in {summary['frames_dir']}")


def run(args: argparse.Namespace) -> int:
    from ifc_jax import api
    from ifc_jax.commands import config_or_none
    from ifc_jax.inference.video import names_several_videos
    from ifc_jax.io import print_json

    options = dict(weights=args.weights, min_score=args.min_score, gif_frames=args.gif_frames,
                   keyframes=args.keyframes, overlay_max_side=args.overlay_max_side,
                   fps=args.fps, mp4=args.mp4, png_frames=args.png_frames)
    if not names_several_videos(args.input):  # one video: into --output, as before
        summary = api.predict_video(config_or_none(args), args.workdir, args.input[0],
                                    args.output, **options)
        if args.json:
            print_json(summary)
        else:
            _print_video(summary, args.min_score)
        return 0
    batch = api.predict_videos(config_or_none(args), args.workdir, args.input, args.output,
                               **options)
    if args.json:
        print_json(batch)
        return 0
    for number, summary in enumerate(batch["videos"], start=1):
        print(f"[{number}/{len(batch['videos'])}] {summary['input']} -> {summary['output']}")
        _print_video(summary, args.min_score)
    count = len(batch["videos"])
    print(f"{count} video{'s' if count != 1 else ''}, {batch['frames']} frames in "
          f"{batch['seconds']:.1f} s ({batch['frames_per_second']:.1f} frames/s)")
    return 0
