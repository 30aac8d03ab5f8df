"""Videos of at most one window with their frames packed end to end into shared chunks.

A video of F <= T frames (T = window_frames) is one window: offline inference (T = 36) sees
every YouTube-VIS 2019 video that way. `VideoPredictor.submit` encodes such a video as a chunk
of its own, F frames followed by blank filler frames, so at T = 36 a 20-frame video costs 36
frames of backbone work. `PackedVideos` writes the frames of consecutive videos one after the
other into chunks of `chunk_frames` frames instead, and encodes each chunk once: a chunk holds
the end of one video and the start of the next. Each video's window is cut on the device out
of the one or two chunks holding its frames, as near-online windows are
(`VideoPredictor.run_windows`); the window's frames after its F-th (the next video's, or
filler) count as padding there, so the outputs are bitwise those of the video encoded alone
(the per-frame programs see each frame on its own). The backbone's work then follows the
frames, not the videos.

A chunk is encoded once it is full, or when a video whose window needs it is asked for its
result first (`PendingPrediction.result()`), so callers keep a few videos submitted ahead
(`evaluate` keeps two). Videos of another input size close the open chunk and start a new
one; videos longer than T (several windows) go through `VideoPredictor.submit` as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from ifc_jax.inference.predictor import (
    STAGES,
    PendingPrediction,
    VideoPredictor,
    VideoTracking,
    blank_chunk,
    checked_frames,
    kept_instances,
    padded_input_size,
)
from ifc_jax.inference.tracking import stride8_valid_size


@dataclass
class _Video:
    """A packed video: its frames are chunk `chunk`'s from `offset` on, `length` of them
    (running on into the next chunk where they do not fit)."""

    chunk: int
    offset: int
    length: int
    resized_size: tuple[int, int]
    tracking: VideoTracking
    seconds: dict[str, float]
    outputs: dict[str, jax.Array] | None = None


@dataclass
class _OpenChunk:
    """The chunk being filled, with frames of one resized size."""

    resized_size: tuple[int, int]
    frame_size: tuple[int, int] | None  # `pad_chunk`'s: None when no padding in space
    pixels: np.ndarray  # (C, H, W, 3) uint8
    fill: int = 0


class PackedVideos:
    """Submits videos like `VideoPredictor.submit`, packing the frames of one-window videos
    into shared chunks (see the module docstring). One instance per stream of videos on one
    device; results equal `predictor.submit`'s."""

    def __init__(self, predictor: VideoPredictor):
        self._predictor = predictor
        self._chunk_frames = predictor.chunk_frames
        self._open: _OpenChunk | None = None
        self._next_index = 0  # index of the open chunk (chunks before it are encoded)
        self._features: dict[int, dict[str, jax.Array]] = {}
        self._waiting: list[_Video] = []  # submitted videos whose window is not dispatched

    def packs(self, num_frames: int) -> bool:
        """Whether a `num_frames` video is packed: one window holds it (an empty video goes
        to `submit`, which refuses it)."""
        return 1 <= num_frames <= self._predictor.window_frames

    def submit(self, frames: Any, num_frames: int, resized_size: tuple[int, int],
               output_size: tuple[int, int]) -> PendingPrediction:
        """As `VideoPredictor.submit`; the video's window is dispatched once the chunks
        holding its frames are encoded."""
        if not self.packs(num_frames):
            self.flush()
            return self._predictor.submit(frames, num_frames, resized_size, output_size)
        predictor = self._predictor
        height, width = resized_size
        if self._open is not None and self._open.resized_size != (height, width):
            self.flush()
        if self._open is None:
            input_size = padded_input_size(height, width, predictor.pad_size_multiple)
            frame_size = None if input_size == (height, width) else (height, width)
            self._open = _OpenChunk((height, width), frame_size,
                                    blank_chunk(self._chunk_frames, input_size, frame_size))
        seconds = dict.fromkeys(STAGES, 0.0)
        video = _Video(self._next_index, self._open.fill, num_frames, (height, width),
                       predictor.tracking(num_frames, (height, width), output_size, seconds),
                       seconds)
        read = 0
        for frame in checked_frames(frames, height, width, seconds):
            if read == num_frames:
                raise ValueError(
                    f"the video yielded more than the {num_frames} frames expected")
            self._open.pixels[self._open.fill, :height, :width] = frame
            self._open.fill += 1
            read += 1
            if self._open.fill == self._chunk_frames:
                self._encode_open(seconds)
        if read != num_frames:
            raise ValueError(f"the video yielded {read} frames, expected {num_frames}")
        self._waiting.append(video)
        self._dispatch_ready()
        return PendingPrediction(lambda: self._complete(video), seconds)

    def flush(self) -> None:
        """Encodes the open chunk (its unused frames blank filler) and dispatches every
        submitted video's window."""
        if self._open is not None and self._open.fill:
            owner = self._waiting[-1].seconds if self._waiting else dict.fromkeys(STAGES, 0.0)
            self._encode_open(owner)
        self._open = None
        self._dispatch_ready()

    def _encode_open(self, seconds: dict[str, float]) -> None:
        """Dispatches the per-frame programs on the open chunk and opens the next one."""
        chunk = self._open
        self._features[self._next_index] = self._predictor.encode_chunk(
            chunk.pixels, chunk.frame_size, seconds, chunk.fill)
        self._next_index += 1
        # A new buffer: the dispatched call may still read this one.
        self._open = _OpenChunk(chunk.resized_size, chunk.frame_size,
                                blank_chunk(len(chunk.pixels), chunk.pixels.shape[1:3],
                                            chunk.frame_size))

    def _dispatch_ready(self) -> None:
        """Dispatches the windows whose frames are all encoded; frees the chunks no waiting
        or later video needs."""
        chunk_frames = self._chunk_frames
        still_waiting = []
        for video in self._waiting:
            last_chunk = video.chunk + (video.offset + video.length - 1) // chunk_frames
            if last_chunk < self._next_index:
                self._dispatch(video, last_chunk)
            else:
                still_waiting.append(video)
        self._waiting = still_waiting
        needed = min([video.chunk for video in self._waiting] + [self._next_index])
        for index in [index for index in self._features if index < needed]:
            del self._features[index]

    def _dispatch(self, video: _Video, last_chunk: int) -> None:
        predictor = self._predictor
        input_size = padded_input_size(*video.resized_size, predictor.pad_size_multiple)
        # The second chunk is the first again when the video fits in one.
        video.outputs = predictor.dispatch_windows(
            self._features[video.chunk], self._features[last_chunk],
            np.array([video.offset], np.int32), np.array([video.length], np.int32),
            stride8_valid_size(*input_size), video.seconds)

    def _complete(self, video: _Video) -> tuple[list[Any], Any, int]:
        if video.outputs is None:
            self.flush()
        (probs, logits, mask_probs), = kept_instances(video.outputs, 1, video.seconds)
        video.outputs = None
        video.tracking.add_window(0, probs, logits[:, :video.length],
                                  None if mask_probs is None else mask_probs[:, :video.length])
        video.tracking.flush()
        return video.tracking.complete(1)
