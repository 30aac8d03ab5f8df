"""Near-online clip tracking: merging window predictions into video tracks.

The algorithm: docs/inference.md#merging-windows.

Use, for one video of `num_frames` frames resized to (resized_h, resized_w) for the model and
(height, width) originally (the predictor does this, encoding the RLEs with
`rle_upsample.RleUpsampler` on host threads instead):

    upsample = StrideEightUpsampler((resized_h, resized_w), (height, width))
    masks = TrackMasks(num_frames, height, width)                 # RLE per final frame
    def on_final_frame(track_id, frame_index, mean_logits):       # (h8, w8), then dropped
        masks.add(track_id, frame_index, upsample(mean_logits))
    tracker = ClipTracker(num_frames, match_threshold, on_final_frame,
                          valid_size=upsample.valid_size)
    for start, class_probs, mask_logits in windows:               # in order of start
        tracker.add_window(start, *keep_object_queries(class_probs, mask_logits))
    tracks = tracker.finish()                                     # class probs per track

Matching (as the original `Videos.update`): a new window's kept instances are compared with
the tracks of the previous up-to-T' windows (T' = the new window's length) by a space-time soft
IoU of mask probabilities on the frames the two windows share, averaged over the windows in
which the track appears there; scores <= 0.05 are zeroed, scipy's Hungarian maximises, and a
pair is matched only if its score is > 0.05. Unmatched instances open new tracks (no cap on the
number of tracks; the original stops at 50).

Memory stays bounded by what future windows can touch: the probabilities of the last
T' windows (for matching) and, per track, running logit sums only for frames that a later
window may still cover (frames >= the latest window start). When a window starting at s
arrives, every frame < s is final (window starts never decrease): its mean logit (sum / number
of windows covering it) goes to `on_final_frame` and is dropped. Per track only the (K+1,)
class-probability sum is kept for the whole video.

Mask resolution rule: the stride-8 logits cover the model input, which is the resized frame
padded at the bottom/right. Only the top-left ceil(resized_h / 8) x ceil(resized_w / 8) cells
belong to the frame (the original's `interim_size`, and the valid region of our padding mask);
they are cropped (on entry with `valid_size`, so padding never enters the soft IoU either) and
upsampled straight to the ORIGINAL video size with bilinear interpolation (half-pixel centres,
align_corners=False, no antialias: PyTorch's F.interpolate), then > 0.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ifc_jax.data.masks import empty_rle, encode_rle

SOFT_IOU_EPS = 1e-6  # in the sIoU denominator and the window-count divisor, as the original
MASK_STRIDE = 8

FinalFrameCallback = Callable[[int, int, np.ndarray], None]
FinalWindowCallback = Callable[[list[int], int, np.ndarray], None]


def kept_query_mask(class_probs: np.ndarray) -> np.ndarray:
    """(N,) bool: queries whose arg-max over the K+1 probabilities is a real class (not K)."""
    return np.argmax(class_probs, axis=-1) != class_probs.shape[-1] - 1


def keep_object_queries(class_probs: np.ndarray, mask_logits: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The kept instances of a window (docs/inference.md#kept-instances).

    class_probs: (N, K+1) softmax probabilities; mask_logits: (N, T', h8, w8).
    Returns (class_probs[kept], mask_logits[kept]).
    """
    kept = kept_query_mask(np.asarray(class_probs))
    return np.asarray(class_probs)[kept], np.asarray(mask_logits)[kept]


def stride8_valid_size(resized_height: int, resized_width: int,
                       stride: int = MASK_STRIDE) -> tuple[int, int]:
    """Cells of the stride-8 grid that cover the (unpadded) resized frame."""
    return math.ceil(resized_height / stride), math.ceil(resized_width / stride)


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D bilinear resizing, half-pixel centres, no antialias (PyTorch's align_corners=False).

    Output i reads source coordinate (i + 0.5) * in / out - 0.5, clamped at 0 below; its two
    taps are floor(source) and the next index clamped at in - 1. Returns (low, high) int
    (out_size,) indices and the (out_size,) weight of `high`.
    """
    source = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(source.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, source - low


def bilinear_resize(values: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) float64 bilinear resize (see bilinear_taps), rows then columns."""
    row_low, row_high, row_weight = bilinear_taps(values.shape[0], out_size[0])
    col_low, col_high, col_weight = bilinear_taps(values.shape[1], out_size[1])
    values = np.asarray(values, np.float64)
    rows = (values[row_low] * (1.0 - row_weight)[:, None]
            + values[row_high] * row_weight[:, None])
    return rows[:, col_low] * (1.0 - col_weight) + rows[:, col_high] * col_weight


class StrideEightUpsampler:
    """Stride-8 mask logits (h8, w8) of a padded input -> bool mask at the original size.

    resized_size: the frame size the model saw before padding; output_size: the original
    (height, width). Crops the valid ceil(resized/8) cells, upsamples bilinearly, thresholds
    at 0.
    """

    def __init__(self, resized_size: tuple[int, int], output_size: tuple[int, int],
                 stride: int = MASK_STRIDE):
        self.valid_size = stride8_valid_size(*resized_size, stride)
        self.output_size = (int(output_size[0]), int(output_size[1]))

    def logits(self, stride8_logits: np.ndarray) -> np.ndarray:
        """(H, W) float64 upsampled logits."""
        valid_h, valid_w = self.valid_size
        if stride8_logits.shape[0] < valid_h or stride8_logits.shape[1] < valid_w:
            raise ValueError(f"logits {stride8_logits.shape} smaller than the valid stride-8 "
                             f"grid {self.valid_size}")
        return bilinear_resize(stride8_logits[:valid_h, :valid_w], self.output_size)

    def __call__(self, stride8_logits: np.ndarray) -> np.ndarray:
        return self.logits(stride8_logits) > 0.0


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in the logits' own precision (float32 from the tracker, as the
    original computes on its GPU). numpy's vectorised exp makes this several times faster
    than scipy.special.expit; exp overflows to inf for x < -88 in float32, giving exactly 0."""
    out = np.negative(logits)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def frame_sums(probs: np.ndarray) -> np.ndarray:
    """(n, F, h8, w8) probabilities -> (n, F) float64 sums over each frame's cells."""
    return probs.reshape(*probs.shape[:2], math.prod(probs.shape[2:])).sum(-1, dtype=np.float64)


def soft_iou(track_probs: np.ndarray, instance_probs: np.ndarray,
             track_sums: np.ndarray | None = None,
             instance_sums: np.ndarray | None = None) -> np.ndarray:
    """Space-time soft IoU (docs/inference.md#merging-windows) of every track with every new
    instance.

    track_probs: (m, F, h8, w8), instance_probs: (n, F, h8, w8) mask probabilities on the
    same F shared frames. Sums run over time AND space before dividing:
    Σ p_s p_i / (Σ (p_s + p_i - p_s p_i) + 1e-6). Returns (m, n) float64.
    track_sums (m, F) and instance_sums (n, F): their `frame_sums`, when already known (the
    tracker computes them once per window instead of once per comparison).

    The products are summed by matrix products in the probabilities' own precision (float32
    from the tracker, as the original computes on its GPU), one per frame then over the
    frames in float64; the other sums in float64.
    """
    if track_sums is None:
        track_sums = frame_sums(track_probs)
    if instance_sums is None:
        instance_sums = frame_sums(instance_probs)
    frames, cells = track_probs.shape[1], math.prod(track_probs.shape[2:])
    old = track_probs.reshape(len(track_probs), frames, cells).transpose(1, 0, 2)  # (F, m, hw)
    new = instance_probs.reshape(len(instance_probs), frames, cells).transpose(1, 2, 0)
    intersection = np.matmul(old, new).sum(0, dtype=np.float64)  # (m, n)
    union = (track_sums.sum(1)[:, None] + instance_sums.sum(1)[None, :] - intersection)
    return intersection / (union + SOFT_IOU_EPS)


def hungarian_matches(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs of the maximum-score assignment after zeroing scores <= threshold,
    keeping only pairs whose score is > threshold (the original's rule)."""
    scores = np.where(scores > threshold, scores, 0.0)
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)
            if scores[r, c] > threshold]


@dataclass
class _Window:
    """A processed window kept for matching: probs[i] (T', h8, w8) float32 and sums[i] (T',)
    its per-frame sums (`frame_sums`) belong to track track_ids[i]. The sums are computed the
    first time a later window shares frames with it (`frame_sums_of`): offline windows never
    do."""

    start: int
    length: int
    track_ids: list[int]
    probs: np.ndarray  # (n, T', h8, w8)
    sums: np.ndarray | None = None  # (n, T')

    def frame_sums_of(self) -> np.ndarray:
        """sums, computed now if not yet."""
        if self.sums is None:
            self.sums = frame_sums(self.probs)
        return self.sums


@dataclass
class _Track:
    track_id: int
    class_prob_sum: np.ndarray  # (K+1,)
    num_windows: int = 0
    logit_sums: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (h8, w8) sum
    window_counts: dict[int, int] = field(default_factory=dict)  # frame -> windows covering it
    final_logits: dict[int, np.ndarray] | None = None  # kept only without a callback


@dataclass
class FinishedTrack:
    """A video track. class_probs: (K+1,) mean over the windows it was assigned in.

    frame_logits: frame -> mean stride-8 logits (h8, w8), only when the tracker had no
    on_final_frame callback (otherwise the frames went to the callback).
    """

    track_id: int
    class_probs: np.ndarray
    num_windows: int
    frame_logits: dict[int, np.ndarray] | None


class ClipTracker:
    """Streams window predictions of one video into tracks, with bounded memory.

    The algorithm: docs/inference.md#merging-windows.

    on_final_frame(track_id, frame_index, mean_logits (h8, w8) float64) is called once per
    (track, frame) that some window assigned to the track covered, as soon as no later window
    can change it; frames no window assigned are empty masks. Without a callback the mean
    logits are kept and returned by `finish()` (convenient for short videos and tests).

    A window that shares no frame with an earlier one (the first; every offline window) is
    held whole: its frames' means are its own logits unless a later window overlaps it. If
    none does, its frames go out together: to on_final_window(track_ids, start, mean_logits
    (n, T', h8, w8)) when given (row i is track track_ids[i]; float32, the window's logits,
    which are the means exactly), else frame by frame as above. The values are the same
    either way; only the per-frame bookkeeping is skipped.
    """

    def __init__(self, num_frames: int, match_threshold: float,
                 on_final_frame: FinalFrameCallback | None = None,
                 valid_size: tuple[int, int] | None = None,
                 on_final_window: FinalWindowCallback | None = None):
        self.num_frames = num_frames
        # Cells of the stride-8 grid that cover the frame (stride8_valid_size): incoming
        # logits are cropped to them at once, so padding cells count neither in the soft
        # IoU (the original ran one unpadded video) nor in memory.
        self.valid_size = valid_size
        self.match_threshold = match_threshold
        if on_final_window is not None and on_final_frame is None:
            raise ValueError("on_final_window needs on_final_frame (for windows that overlap)")
        self._on_final_frame = on_final_frame
        self._on_final_window = on_final_window
        self._windows: deque[_Window] = deque()
        # Frames before this one have been covered by some window.
        self._covered_until = 0
        # The latest window if no earlier one covered any of its frames: (start, track ids,
        # (n, T', h8, w8) float32 logits, which are also its frames' means).
        self._held: tuple[int, list[int], np.ndarray] | None = None
        self._max_window_length = 0
        self._tracks: list[_Track] = []
        self._active: set[int] = set()  # tracks holding logit sums of non-final frames
        self._last_start = -1
        self._finished = False

    def add_window(self, start: int, class_probs: np.ndarray, mask_logits: np.ndarray,
                   mask_probs: np.ndarray | None = None) -> None:
        """Merges one window: its kept instances' (n, K+1) probs and (n, T', h8, w8) logits.

        mask_probs: `sigmoid(mask_logits)` (float32, same shape) when already computed (the
        predictor's device program returns them); None: computed here.
        Windows must come in non-decreasing `start` order.
        """
        if self._finished:
            raise RuntimeError("add_window after finish()")
        class_probs = np.asarray(class_probs, np.float64)
        mask_logits = np.asarray(mask_logits, np.float32)
        if mask_probs is not None:
            mask_probs = np.asarray(mask_probs, np.float32)
            if mask_probs.shape != mask_logits.shape:
                raise ValueError(f"mask probs {mask_probs.shape} and logits "
                                 f"{mask_logits.shape} differ in shape")
        if self.valid_size is not None and mask_logits.ndim == 4:
            mask_logits = mask_logits[:, :, :self.valid_size[0], :self.valid_size[1]]
            if mask_probs is not None:
                mask_probs = mask_probs[:, :, :self.valid_size[0], :self.valid_size[1]]
        if mask_logits.ndim != 4 or class_probs.ndim != 2 or \
                len(class_probs) != len(mask_logits):
            raise ValueError(f"expected (n, K+1) probs and (n, T', h8, w8) logits, got "
                             f"{class_probs.shape} and {mask_logits.shape}")
        length = mask_logits.shape[1]
        if start < self._last_start or start < 0 or start + length > self.num_frames:
            raise ValueError(f"window [{start}, {start + length}) out of order or outside the "
                             f"{self.num_frames}-frame video (previous start {self._last_start})")
        self._finalize_before(start)
        self._last_start = start
        probs = sigmoid(mask_logits) if mask_probs is None else mask_probs  # float32
        window = _Window(start, length, [], probs)
        matches = self._match(window)

        track_ids = []
        # No frame of this window is in any running sum: it is held whole (class docstring).
        hold = start >= self._covered_until
        for instance in range(len(mask_logits)):
            track_id = matches.get(instance)
            if track_id is None:
                track_id = len(self._tracks)
                self._tracks.append(_Track(track_id, np.zeros(class_probs.shape[1])))
            track = self._tracks[track_id]
            track.class_prob_sum += class_probs[instance]
            track.num_windows += 1
            track_ids.append(track_id)
            if not hold:
                self._add_to_sums(track, start, mask_logits[instance])
        if hold and track_ids:
            # A copy (the caller's array may change), float32 as given: a mean of one
            # window's logit is that logit, and the mask encoders take float32.
            self._held = (start, track_ids, np.array(mask_logits, np.float32))
        self._covered_until = max(self._covered_until, start + length)
        window.track_ids = track_ids
        self._windows.append(window)
        self._max_window_length = max(self._max_window_length, length)
        while len(self._windows) > self._max_window_length:
            self._windows.popleft()

    def _match(self, new_window: _Window) -> dict[int, int]:
        """instance index -> existing track id, for the matched instances of a new window."""
        start, probs = new_window.start, new_window.probs
        num_instances, length = probs.shape[:2]
        if num_instances == 0:
            return {}
        # Tracks of the previous up-to-T' windows, with their soft IoU summed over windows.
        siou_sums: dict[int, np.ndarray] = {}
        valid_windows: dict[int, int] = {}
        for window in list(self._windows)[-length:]:
            first = max(start, window.start)
            last = min(start + length, window.start + window.length)
            if first >= last or not window.track_ids:
                continue  # no shared frame: this window adds nothing to any track
            old = slice(first - window.start, last - window.start)
            new = slice(first - start, last - start)
            siou = soft_iou(window.probs[:, old], probs[:, new], window.frame_sums_of()[:, old],
                            new_window.frame_sums_of()[:, new])
            for row, track_id in enumerate(window.track_ids):
                siou_sums[track_id] = siou_sums.get(track_id, 0.0) + siou[row]
                valid_windows[track_id] = valid_windows.get(track_id, 0) + 1
        if not siou_sums:
            return {}
        track_ids = sorted(siou_sums)
        # Averaged over the windows where the track shares frames (+1e-6 as the original).
        scores = np.stack([siou_sums[t] / (valid_windows[t] + SOFT_IOU_EPS) for t in track_ids])
        return {col: track_ids[row]
                for row, col in hungarian_matches(scores, self.match_threshold)}

    def _add_to_sums(self, track: _Track, start: int, logits: np.ndarray) -> None:
        """Adds one window's (T', h8, w8) logits of `track` to its per-frame sums."""
        for offset, frame_logits in enumerate(logits):
            frame = start + offset
            if frame in track.logit_sums:
                track.logit_sums[frame] += frame_logits
                track.window_counts[frame] += 1
            else:
                track.logit_sums[frame] = frame_logits.astype(np.float64)
                track.window_counts[frame] = 1
        self._active.add(track.track_id)

    def _finalize_before(self, frame_limit: int) -> None:
        """Hands off every (track, frame < frame_limit) mean logit and frees its sum."""
        if self._held is not None:
            start, track_ids, logits = self._held
            self._held = None
            if frame_limit >= start + logits.shape[1]:
                self._hand_off_window(start, track_ids, logits)
            else:  # a later window overlaps it: its frames join the running sums
                for track_id, track_logits in zip(track_ids, logits, strict=True):
                    self._add_to_sums(self._tracks[track_id], start, track_logits)
        for track_id in sorted(self._active):
            track = self._tracks[track_id]
            for frame in sorted(f for f in track.logit_sums if f < frame_limit):
                self._hand_off_frame(track, frame, track.logit_sums.pop(frame)
                                     / track.window_counts.pop(frame))
            if not track.logit_sums:
                self._active.discard(track_id)

    def _hand_off_window(self, start: int, track_ids: list[int], means: np.ndarray) -> None:
        """A held window's final frames: means (n, T', h8, w8) float32 (its logits), row i of
        track track_ids[i]."""
        if self._on_final_window is not None:
            self._on_final_window(track_ids, start, means)
            return
        for track_id, track_means in zip(track_ids, means, strict=True):
            for offset, mean in enumerate(track_means):
                self._hand_off_frame(self._tracks[track_id], start + offset,
                                     mean.astype(np.float64))

    def _hand_off_frame(self, track: _Track, frame: int, mean: np.ndarray) -> None:
        """One final (h8, w8) mean: to on_final_frame, or kept for `finish()`."""
        if self._on_final_frame is not None:
            self._on_final_frame(track.track_id, frame, mean)
        else:
            if track.final_logits is None:
                track.final_logits = {}
            track.final_logits[frame] = mean

    def finish(self) -> list[FinishedTrack]:
        """Finalises the remaining frames and returns the tracks in creation order."""
        if not self._finished:
            self._finalize_before(self.num_frames)
            self._windows.clear()
            self._finished = True
        return [FinishedTrack(t.track_id, t.class_prob_sum / t.num_windows, t.num_windows,
                              None if self._on_final_frame else dict(t.final_logits or {}))
                for t in self._tracks]

    def retained_state(self) -> dict[str, int]:
        """What the tracker holds now: windows, dense arrays and their bytes, tracks."""
        window_arrays = [a for w in self._windows if w.track_ids for a in (w.probs, w.sums)
                         if a is not None]
        pending = [a for t in self._active for a in self._tracks[t].logit_sums.values()]
        if self._held is not None:
            pending.append(self._held[2])
        kept = [a for t in self._tracks for a in (t.final_logits or {}).values()]
        return {"windows": len(self._windows), "tracks": len(self._tracks),
                "active_tracks": len(self._active),
                "dense_arrays": len(window_arrays) + len(pending) + len(kept),
                "dense_bytes": sum(a.nbytes for a in window_arrays + pending + kept)}


class TrackMasks:
    """Per-track, per-frame masks of one video, kept as RLE only.

    `add(track_id, frame_index, mask)` encodes a final (H, W) bool mask at once and drops it;
    `segmentations(track_id)` returns the full per-frame list, empty RLEs where nothing was
    added. Memory: one RLE per (track, frame) added.
    """

    def __init__(self, num_frames: int, height: int, width: int):
        self.num_frames, self.height, self.width = num_frames, height, width
        self._empty = empty_rle(height, width)
        self._frames: dict[int, dict[int, dict]] = {}

    def add(self, track_id: int, frame_index: int, mask: np.ndarray) -> None:
        if mask.shape != (self.height, self.width):
            raise ValueError(f"mask shape {mask.shape} != video size "
                             f"{(self.height, self.width)}")
        if not 0 <= frame_index < self.num_frames:
            raise ValueError(f"frame {frame_index} outside 0..{self.num_frames - 1}")
        self._frames.setdefault(track_id, {})[frame_index] = encode_rle(mask)

    def segmentations(self, track_id: int) -> list[dict]:
        frames = self._frames.get(track_id, {})
        return [frames.get(t, self._empty) for t in range(self.num_frames)]
