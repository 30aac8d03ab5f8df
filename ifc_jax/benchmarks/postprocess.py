"""Host post-processing speed: tracking + masks at the output size + RLE, without the model.

What a GPU evaluation leaves to the host: for each window, the kept instances' class
probabilities and stride-8 mask logits, with the logits' sigmoids (which the predictor's device
program computes), go through the tracker (`ClipTracker`), and each frame it finishes becomes
one RLE per track at the video's original size. Measured on synthetic
model outputs: `tracks` objects (smooth elliptic logit blobs that drift and grow, with noise)
on the stride-8 grid of a `--height` x `--width` video resized to short side 360 (45 x 80 for
720 x 1280), near-online windows (T=5, S=1), so every frame is finished once per track. The
finished frames go to the thread pool once per `windows_per_call` windows (the config's: 8 by
default), as the predictor hands them over once per device call.

Reported per host thread count: milliseconds of wall time per output frame for the whole
host side (`inference.predictor.VideoTracking`, RLEs straight from the logits), with that
run's stage times per frame as the predictor counts them (tracking on the calling thread;
masks+RLE summed over the pool's threads, so it can exceed the wall time), and beside it
the full-size path it replaces (each mask upsampled to the output size in float64, then
encoded by pycocotools; one thread), against whose masks every timed run is checked. The
RLEs' run boundaries are found where `config.inference.mask_rle` says: `auto` is the host's outline
path on a CPU and the device program on a GPU/TPU (whose device time then counts in the
wall time, as it does for the predictor's threads).

  python main.py benchmark --what postprocess --json            # 720x1280, 10 tracks
  python main.py benchmark --what postprocess --json --config.inference.mask_rle=device
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any, NamedTuple

import numpy as np

WINDOW_FRAMES, WINDOW_STRIDE = 5, 1
SHORT_SIDE = 360


def synthetic_windows(num_frames: int, tracks: int, grid: tuple[int, int], num_classes: int,
                      seed: int = 0) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(start, probs (n, K+1), logits (n, T, h, w) float32) of every near-online window."""
    from ifc_jax.inference.predictor import window_bounds

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:grid[0], 0:grid[1]].astype(np.float32)
    centre = rng.uniform((0.2 * grid[0], 0.2 * grid[1]), (0.8 * grid[0], 0.8 * grid[1]),
                         (tracks, 2))
    radius = rng.uniform((2, 3), (grid[0] / 4, grid[1] / 4), (tracks, 2))
    drift = rng.normal(0, 0.3, (tracks, 2))
    frames = []
    for t in range(num_frames):
        cy, cx = (centre + t * drift).T
        ry, rx = (radius * (1 + 0.01 * t)).T
        inside = 1 - ((rows - cy[:, None, None]) / ry[:, None, None]) ** 2 \
            - ((cols - cx[:, None, None]) / rx[:, None, None]) ** 2
        frames.append(6 * np.maximum(inside, -3) + rng.normal(0, 0.5, (tracks, *grid)))
    video = np.stack(frames, axis=1).astype(np.float32)  # (tracks, F, h, w)
    probs = np.full((tracks, num_classes + 1), 0.1 / num_classes)
    probs[np.arange(tracks), rng.integers(0, num_classes, tracks)] += 0.8
    probs[:, -1] = 0.1
    windows = []
    for start, end in window_bounds(num_frames, WINDOW_FRAMES, WINDOW_STRIDE):
        noise = rng.normal(0, 0.2, (tracks, end - start, *grid)).astype(np.float32)
        windows.append((start, probs, video[:, start:end] + noise))
    return windows


class _Run(NamedTuple):
    """One timed post-processing run."""

    seconds: float  # wall time
    segmentations: list  # the tracks' RLEs, per track and frame
    stage_seconds: dict[str, float]  # the predictor's stages (predictor.STAGES)


def _run_tracking(windows: list, num_frames: int, grid: tuple[int, int],
                  output_size: tuple[int, int], threads: int, windows_per_call: int,
                  mask_rle: str) -> _Run:
    """Tracks and encodes `windows` as the predictor does, on `threads` RLE threads."""
    from ifc_jax.inference.predictor import STAGES, VideoTracking

    pool = (concurrent.futures.ThreadPoolExecutor(threads) if threads else None)
    seconds = dict.fromkeys(STAGES, 0.0)
    try:
        begin = time.perf_counter()
        tracking = VideoTracking(num_frames, 0.05, grid, output_size, pool, threads, seconds,
                                 mask_rle)
        for index, (start, probs, logits, mask_probs) in enumerate(windows):
            tracking.add_window(start, probs, logits, mask_probs)
            if (index + 1) % windows_per_call == 0:
                tracking.flush()  # as the predictor does once per device call
        prediction = tracking.finish(len(windows)).result()
        return _Run(time.perf_counter() - begin, prediction.segmentations, seconds)
    finally:
        if pool is not None:
            pool.shutdown()


def _run_full_size(windows: list, num_frames: int, grid: tuple[int, int],
                   output_size: tuple[int, int]) -> tuple[float, list]:
    """The path the RLEs-from-logits replace: (H, W) float64 masks, then pycocotools."""
    from ifc_jax.data.masks import empty_rle, encode_rle
    from ifc_jax.inference.tracking import ClipTracker, StrideEightUpsampler

    begin = time.perf_counter()
    upsample = StrideEightUpsampler((grid[0] * 8, grid[1] * 8), output_size)
    rles: dict[tuple[int, int], dict] = {}

    def on_final_frame(track_id: int, frame: int, logits: np.ndarray) -> None:
        rles[track_id, frame] = encode_rle(upsample(logits))

    tracker = ClipTracker(num_frames, 0.05, on_final_frame, valid_size=grid)
    for start, probs, logits, _ in windows:
        tracker.add_window(start, probs, logits)
    tracks = tracker.finish()
    empty = empty_rle(*output_size)
    segmentations = [[rles.get((track.track_id, t), empty) for t in range(num_frames)]
                     for track in tracks]
    return time.perf_counter() - begin, segmentations


def benchmark_postprocess(*, height: int = 720, width: int = 1280, tracks: int = 10,
                          num_frames: int = 36, threads: tuple[int, ...] = (1, 2),
                          repeats: int = 3, num_classes: int = 40, windows_per_call: int = 8,
                          mask_rle: str = "auto") -> dict[str, Any]:
    """Host ms per output frame of the post-processing, per thread count; see the module
    docstring."""
    import jax

    from ifc_jax.data.clips import shortest_edge_size
    from ifc_jax.inference.predictor import mask_encoder
    from ifc_jax.inference.tracking import sigmoid, stride8_valid_size
    from ifc_jax.io import UserError

    if not (32 <= height <= 8192 and 32 <= width <= 8192):
        raise UserError(f"--height/--width: must be in 32..8192 pixels, got {height}x{width}")
    if tracks < 1 or num_frames < 1 or repeats < 1 or not threads or min(threads) < 0:
        raise UserError("--tracks, --frames and --repeats must be >= 1, --threads >= 0")
    resized = shortest_edge_size(height, width, SHORT_SIDE, 1333)
    grid = stride8_valid_size(*resized)
    # The predictor's device program returns the kept masks' sigmoids with their logits: they
    # are no host work (made here before any timing, with the tracker's own float32 formula).
    windows = [(start, probs, logits, sigmoid(logits)) for start, probs, logits
               in synthetic_windows(num_frames, tracks, grid, num_classes)]
    output_size = (height, width)
    reference_seconds, reference = _run_full_size(windows, num_frames, grid, output_size)
    runs = []
    for count in threads:
        run = (windows, num_frames, grid, output_size, count, windows_per_call, mask_rle)
        _run_tracking(*run)  # warm-up
        timed = [_run_tracking(*run) for _ in range(repeats)]
        best = min(timed, key=lambda run: run.seconds)
        stages = best.stage_seconds
        same = all(run.segmentations == reference for run in timed)
        runs.append({"threads": count, "ms_per_frame": 1000 * best.seconds / num_frames,
                     "frames_per_s": num_frames / best.seconds, "same_masks_as_full_size": same,
                     "tracking_ms_per_frame": 1000 * stages["tracking"] / num_frames,
                     "masks_rle_ms_per_frame": 1000 * stages["masks_rle"] / num_frames})
    return {
        "what": "postprocess",
        "height": height, "width": width, "tracks": tracks, "frames": num_frames,
        "grid": list(grid), "windows": len(windows), "repeats": repeats,
        "mask_rle": type(mask_encoder(grid, output_size, mask_rle)).__name__,
        "backend": jax.default_backend(),
        "runs": runs,
        "full_size_path": {"threads": 1, "ms_per_frame": 1000 * reference_seconds / num_frames},
    }


def format_result(result: dict[str, Any]) -> str:
    from ifc_jax.io import format_table

    rows = [[run["threads"], f"{run['ms_per_frame']:.3f}", f"{run['frames_per_s']:.0f}",
             f"{run['tracking_ms_per_frame']:.3f}", f"{run['masks_rle_ms_per_frame']:.3f}",
             "yes" if run["same_masks_as_full_size"] else "NO"] for run in result["runs"]]
    full = result["full_size_path"]
    rows.append(["1 (full-size masks)", f"{full['ms_per_frame']:.3f}",
                 f"{1000 / full['ms_per_frame']:.0f}", "-", "-", "-"])
    return "\n".join([
        f"host post-processing of {result['tracks']} tracks, {result['frames']} frames at "
        f"{result['height']}x{result['width']} (stride-8 grid {result['grid'][0]}x"
        f"{result['grid'][1]}, {result['windows']} near-online windows), run boundaries by "
        f"{result['mask_rle']} on {result['backend']}, best of {result['repeats']}",
        format_table(["threads", "ms/frame", "frames/s", "tracking", "masks+RLE (threads)",
                      "same masks"], rows)])
