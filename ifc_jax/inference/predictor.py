"""Whole-video inference: per-frame features once, windows of T frames, tracking.

The algorithm: docs/inference.md.

`VideoPredictor` streams a video through the model:
* frames arrive as an iterable (a decoded array or a streaming reader) and are encoded in
  chunks of `window_frames` by the jitted per-frame half of the model (backbone, input
  projection, position encoding); each frame is encoded exactly once;
* windows [start, start + T) slide by `window_stride` (the last one right-aligned,
  docs/inference.md#windows); each runs the jitted per-window half (encoder, decoder, heads)
  on features gathered from a small on-device buffer; a window shorter than T (a video
  shorter than T) is padded in time with blank frames that `frame_valid` masks out exactly,
  so one compilation serves a video;
* kept instances go to `ClipTracker`, whose finished frames are upsampled to the original size
  and RLE-encoded at once (`TrackMasks`).
Device memory holds the features of at most two chunks plus one window, and host memory the
tracker's bounded state and the per-frame RLEs: neither grows with the video beyond that.

Offline inference is the same with `window_frames` >= the video length (e.g. T=36 on
YouTube-VIS 2019 val: one window per video).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifc_jax.inference.tracking import (
    ClipTracker,
    StrideEightUpsampler,
    TrackMasks,
    keep_object_queries,
)
from ifc_jax.models.ifc import IFC


def window_bounds(num_frames: int, window_frames: int, window_stride: int
                  ) -> list[tuple[int, int]]:
    """[start, end) of each window: stride S, last window right-aligned.

    See docs/inference.md#windows.
    """
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if window_frames < 1 or window_stride < 1:
        raise ValueError("window_frames and window_stride must be >= 1")
    bounds, start = [], 0
    while True:
        end = start + window_frames
        if end >= num_frames:
            bounds.append((max(0, num_frames - window_frames), num_frames))
            return bounds
        bounds.append((start, end))
        start += window_stride


def pad_chunk(frames: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of one `encode_frames` call from F <= chunk frames (F, H, W, 3) uint8.

    Returns pixels (chunk, H, W, 3), the frames followed by blank filler frames, and padding
    (chunk, H, W) bool, True on every pixel of the filler frames (so one compiled shape serves
    a video's last, shorter chunk).
    """
    count = len(frames)
    if count > chunk:
        raise ValueError(f"{count} frames do not fit a chunk of {chunk}")
    padding = np.zeros((chunk, *frames.shape[1:3]), bool)
    if count == chunk:
        return frames, padding
    pixels = np.zeros((chunk, *frames.shape[1:]), np.uint8)
    pixels[:count] = frames
    padding[count:] = True
    return pixels, padding


@dataclass
class VideoPrediction:
    """Tracks of one video: (K+1,) mean class probabilities and per-frame RLEs, in order."""

    class_probs: list[np.ndarray]
    segmentations: list[list[dict]]
    num_windows: int
    seconds: dict[str, float] = field(default_factory=dict)


class VideoPredictor:
    """Runs a trained IFC over videos. One instance serves many videos (compiled once per
    input size). `variables` is an argument of the compiled programs, not a constant in
    them: assigning new variables of the same shapes (evaluation during training does)
    reuses the compiled programs."""

    def __init__(self, model: IFC, variables: Any, *, window_frames: int, window_stride: int,
                 match_threshold: float):
        """window_frames T, window_stride S and match_threshold as in `config.inference`
        (docs/inference.md); `from_config` reads them from there."""
        self.model = model
        self.variables = variables
        self.window_frames = window_frames
        self.window_stride = window_stride
        self.match_threshold = match_threshold
        # The two jitted device programs (benchmarks time them and count their FLOPs):
        # encode_frames(variables, frames (F, H, W, 3), padding (F, H, W)) -> features, and
        # run_window(variables, features of T frames, frame_valid (T,)) ->
        # (class probs (N, K+1), mask logits (N, T, H/8, W/8)).
        self.encode_frames = jax.jit(
            lambda v, f, p: model.apply(v, f, p, method=IFC.frame_features))

        def run_window(v, features, frame_valid):
            outputs = model.apply(v, jax.tree.map(lambda x: x[None], features),
                                  frame_valid=frame_valid[None], method=IFC.clip_outputs)
            probs = jax.nn.softmax(outputs["pred_logits"][-1, 0], axis=-1)
            return probs, outputs["pred_masks"][-1, 0]

        self.run_window = jax.jit(run_window)

    @classmethod
    def from_config(cls, model: IFC, variables: Any, inference_config: Any) -> VideoPredictor:
        """The predictor of a validated `config.inference`."""
        return cls(model, variables, window_frames=inference_config.window_frames,
                   window_stride=inference_config.window_stride,
                   match_threshold=inference_config.match_threshold)

    def _chunks(self, frames: Iterable[np.ndarray], height: int, width: int
                ) -> Iterator[tuple[int, dict[str, jax.Array]]]:
        """(number of real frames, features of a chunk of window_frames frames) in order."""
        chunk = self.window_frames
        buffer = np.zeros((chunk, height, width, 3), np.uint8)
        count = 0
        for frame in frames:
            frame = np.asarray(frame)
            if frame.shape != (height, width, 3):
                raise ValueError(f"frame of shape {frame.shape}, expected {(height, width, 3)}")
            buffer[count] = frame
            count += 1
            if count == chunk:
                yield count, self._encode_chunk(buffer)
                count = 0
        if count:
            yield count, self._encode_chunk(buffer[:count])

    def _encode_chunk(self, frames: np.ndarray) -> dict[str, jax.Array]:
        """Features of up to window_frames frames, padded in time by `pad_chunk`."""
        return self.encode_frames(self.variables, *pad_chunk(frames, self.window_frames))

    def predict(self, frames: Iterable[np.ndarray], num_frames: int,
                resized_size: tuple[int, int], output_size: tuple[int, int]) -> VideoPrediction:
        """Tracks of one video.

        Args:
          frames: the video's frames in order, each (h, w, 3) uint8 RGB at `resized_size`.
          num_frames: how many frames `frames` yields.
          resized_size: (h, w) of the frames given to the model.
          output_size: (H, W) of the original video: masks are produced at this size.
        """
        height, width = resized_size
        upsample = StrideEightUpsampler((height, width), tuple(output_size))
        masks = TrackMasks(num_frames, *output_size)
        seconds = {"frame_features": 0.0, "windows": 0.0, "tracking": 0.0, "masks_rle": 0.0}

        def on_final_frame(track_id: int, frame_index: int, logits: np.ndarray) -> None:
            begin = time.perf_counter()
            masks.add(track_id, frame_index, upsample(logits))
            seconds["masks_rle"] += time.perf_counter() - begin

        tracker = ClipTracker(num_frames, self.match_threshold, on_final_frame,
                              valid_size=upsample.valid_size)
        chunks = self._chunks(frames, height, width)
        stored: list[tuple[int, int, dict[str, jax.Array]]] = []  # (first frame, count, feats)
        encoded_frames = 0
        bounds = window_bounds(num_frames, self.window_frames, self.window_stride)
        for start, end in bounds:
            while encoded_frames < end:
                begin = time.perf_counter()
                try:
                    count, features = next(chunks)
                except StopIteration:
                    raise ValueError(f"the video yielded {encoded_frames} frames, "
                                     f"expected {num_frames}") from None
                jax.block_until_ready(features)
                seconds["frame_features"] += time.perf_counter() - begin
                stored.append((encoded_frames, count, features))
                encoded_frames += count
            # Chunks that end before this window are no longer needed by any window.
            stored = [item for item in stored if item[0] + item[1] > start]
            begin = time.perf_counter()
            features, frame_valid = self.gather_window(stored, start, end, (height, width))
            probs, logits = self.run_window(self.variables, features, frame_valid)
            probs, logits = np.asarray(probs), np.asarray(logits)[:, : end - start]
            seconds["windows"] += time.perf_counter() - begin
            begin = time.perf_counter()
            masks_before = seconds["masks_rle"]
            tracker.add_window(start, *keep_object_queries(probs, logits))
            seconds["tracking"] += (time.perf_counter() - begin
                                    - (seconds["masks_rle"] - masks_before))
        begin = time.perf_counter()
        masks_before = seconds["masks_rle"]
        tracks = tracker.finish()
        seconds["tracking"] += time.perf_counter() - begin - (seconds["masks_rle"] - masks_before)
        return VideoPrediction(
            class_probs=[track.class_probs for track in tracks],
            segmentations=[masks.segmentations(track.track_id) for track in tracks],
            num_windows=len(bounds),
            seconds=seconds,
        )

    def gather_window(self, stored: list[tuple[int, int, dict[str, jax.Array]]], start: int,
                      end: int, frame_size: tuple[int, int]
                      ) -> tuple[dict[str, jax.Array], jax.Array]:
        """Features of frames [start, end), padded in time to window_frames, from `stored`
        (first frame, real frames, `encode_frames` output) chunks; with frame_valid (T,)."""
        pieces: dict[str, list[jax.Array]] = {}
        for first, count, features in stored:
            lo, hi = max(start, first), min(end, first + count)
            if lo >= hi:
                continue
            for name, value in features.items():
                pieces.setdefault(name, []).append(value[lo - first: hi - first])
        length = end - start
        missing = self.window_frames - length
        if missing:  # only for videos shorter than a window
            blank = self._encode_chunk(np.zeros((0, *frame_size, 3), np.uint8))
            for name, value in blank.items():
                pieces[name].append(value[:missing])
        window = {name: jnp.concatenate(parts) for name, parts in pieces.items()}
        frame_valid = jnp.arange(self.window_frames) < length
        return window, frame_valid
