"""Host speed of `predict`'s pictures: tracks drawn on frames and written as the overlay MP4,
GIF and keyframe PNGs, without the model or the video decoder.

On a GPU the model's part of `predict` takes little time; what is left is this host work,
once per frame of the video (every frame for the MP4). Measured on a synthetic video
(`synthetic_video`: textured frames with `tracks` moving toy objects) at --height x --width
(default 720x1280), whose objects' own masks, RLE-encoded at the frame size, are the tracks
(all drawn, with labels). Reported in milliseconds per frame, best of `repeats`:

- draw: `render_frame` on every frame (RLE decode, blend, contours, labels);
- mp4: encoding the drawn frames into an MP4 (`mp4_writer`, H.264 when PyAV has it);
- overlay: the whole picture stage of `predict` with its defaults (`write_overlays`: the
  drawing, the MP4 of every frame, GIF frames of up to 640 pixels, 4 keyframe PNGs), per
  count in `threads` of host threads drawing frames at once (`inference.overlay_threads`).

  python main.py benchmark --what overlay --json              # 720x1280, 10 tracks
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

GIF_FRAMES, KEYFRAMES, MAX_SIDE = 150, 4, 640  # predict's defaults


def synthetic_tracks(num_frames: int, height: int, width: int, tracks: int
                     ) -> tuple[list[np.ndarray], list[Any]]:
    """(frames uint8 (H, W, 3) each, one DisplayTrack per object with its per-frame RLEs)."""
    from ifc_jax.benchmarks.synthetic_video import synthetic_video
    from ifc_jax.data.masks import encode_rle
    from ifc_jax.visualize import DisplayTrack, track_colour

    _, video = synthetic_video(num_frames, height, width, seed=0, num_objects=tracks)
    frames, rles = [], []
    for frame, masks in video:
        frames.append(frame)
        rles.append([encode_rle(mask) for mask in masks])
    return frames, [DisplayTrack(index, f"object {index}", 0.9, track_colour(index),
                                 [per_frame[index] for per_frame in rles])
                    for index in range(tracks)]


def _best(repeats: int, run: Any) -> float:
    seconds = []
    for _ in range(repeats):
        begin = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - begin)
    return min(seconds)


def benchmark_overlay(*, height: int = 720, width: int = 1280, tracks: int = 10,
                      num_frames: int = 36, repeats: int = 3,
                      threads: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Host ms per frame of drawing and writing predict's overlays; see the module
    docstring."""
    from ifc_jax import visualize
    from ifc_jax.data.masks import decode_rle
    from ifc_jax.io import UserError

    if not (32 <= height <= 8192 and 32 <= width <= 8192):
        raise UserError(f"--height/--width: must be in 32..8192 pixels, got {height}x{width}")
    if tracks < 1 or num_frames < 1 or repeats < 1 or not threads or min(threads) < 1:
        raise UserError("--tracks, --frames, --repeats and --threads must be >= 1")
    frames, display = synthetic_tracks(num_frames, height, width, tracks)
    covered = np.mean([np.any([decode_rle(track.segmentations[t]) for track in display],
                               axis=0).mean() for t in range(num_frames)])
    gif_indices, key_indices = visualize.overlay_frame_indices(num_frames, GIF_FRAMES,
                                                               KEYFRAMES)
    rendered: list[np.ndarray] = []

    def draw() -> None:
        rendered[:] = [visualize.render_frame(frame, t, display)
                       for t, frame in enumerate(frames)]

    with tempfile.TemporaryDirectory(prefix="ifc_overlay_") as folder:
        def mp4() -> None:
            with visualize.mp4_writer(os.path.join(folder, "drawn.mp4"), 30.0) as write:
                for image in rendered:
                    write(image)

        def overlay(count: int) -> None:
            visualize.write_overlays(enumerate(frames), display, folder, gif_indices,
                                     key_indices, num_frames=num_frames, fps=30.0,
                                     max_side=MAX_SIDE, mp4_name="overlay.mp4",
                                     threads=count)

        draw_seconds = _best(repeats, draw)
        mp4_seconds = _best(repeats, mp4)
        overlay_seconds = {count: _best(repeats, lambda c=count: overlay(c))
                           for count in threads}
    per_frame = 1000.0 / num_frames
    return {
        "what": "overlay",
        "height": height, "width": width, "tracks": tracks, "frames": num_frames,
        "repeats": repeats, "mp4_codec": visualize.mp4_codec(),
        "covered_fraction": float(covered),  # of the frame's pixels under some track's mask
        "gif_frames": len(gif_indices), "keyframes": len(key_indices),
        "draw_ms_per_frame": draw_seconds * per_frame,
        "mp4_ms_per_frame": mp4_seconds * per_frame,
        "runs": [{"threads": count, "overlay_ms_per_frame": seconds * per_frame,
                  "frames_per_s": num_frames / seconds}
                 for count, seconds in overlay_seconds.items()],
    }


def format_result(result: dict[str, Any]) -> str:
    from ifc_jax.io import format_table

    rows = [[stage, count, f"{result[f'{key}_ms_per_frame']:.2f}",
             f"{1000 / result[f'{key}_ms_per_frame']:.0f}"]
            for stage, count, key in (
                ("draw (RLE decode, blend, contours, labels)", 1, "draw"),
                (f"MP4 encoding ({result['mp4_codec']}, its own threads)", "-", "mp4"))]
    rows += [["predict's overlay stage (draw, MP4, GIF, keyframes)", run["threads"],
              f"{run['overlay_ms_per_frame']:.2f}", f"{run['frames_per_s']:.0f}"]
             for run in result["runs"]]
    return "\n".join([
        f"overlays of {result['tracks']} tracks on {result['frames']} frames at "
        f"{result['height']}x{result['width']} ({100 * result['covered_fraction']:.0f}% of "
        f"the pixels under a mask; {result['gif_frames']} GIF frames, {result['keyframes']} "
        f"keyframes), best of {result['repeats']}",
        format_table(["stage", "threads", "ms/frame", "frames/s"], rows)])
