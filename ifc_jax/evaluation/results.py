"""results.json for the YouTube-VIS / OVIS servers (SPEC §8.4-8.5).

One entry per (track, class) whose mean class probability is above `class_threshold`
(MULTI_CLS_ON, the default) or one per track with its arg-max real class (single-class mode):

    {"video_id": int, "score": float, "category_id": int (dataset id),
     "segmentations": [{"size": [H, W], "counts": str}, ...]}   # one compressed RLE per frame

Masks are at the video's original size; frames where a track has no mask are the RLE of an
empty mask (never null), as the original IFC writes them. With `drop_empty` a track whose mask
is empty in every frame is left out: it cannot overlap anything, so it can only be a false
positive (the original writes it; `inference.drop_empty_tracks` chooses). `min_pixels`
(`inference.min_track_pixels`) extends this to tracks whose masks cover fewer pixels than that
in the whole video: specks far below the smallest object, from queries the model has not learnt
to switch off. Per-frame masks are
RLE-encoded as soon as they are final (`TrackMasks`), so a long video never holds dense mask
stacks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from ifc_jax.io import UserError, atomic_writer

DEFAULT_CLASS_THRESHOLD = 0.01  # MODEL.IFC.APPLY_CLS_THRES


def encode_mask_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a (H, W) mask: {"size": [H, W], "counts": utf-8 str}."""
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])],
            "counts": rle["counts"].decode("utf-8")}


def empty_rle(height: int, width: int) -> dict:
    """The RLE of an all-zero (height, width) mask."""
    return encode_mask_rle(np.zeros((height, width), np.uint8))


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
        self._frames.setdefault(track_id, {})[frame_index] = encode_mask_rle(mask)

    def segmentations(self, track_id: int) -> list[dict]:
        frames = self._frames.get(track_id, {})
        return [frames.get(t, self._empty) for t in range(self.num_frames)]


def track_pixels(segmentations: Sequence[dict]) -> int:
    """Mask pixels of a track summed over its frames (compressed RLEs)."""
    rles = [{"size": rle["size"], "counts": rle["counts"].encode("utf-8")}
            for rle in segmentations]
    return int(np.sum(mask_util.area(rles))) if rles else 0


def result_options(inference: Any) -> dict[str, Any]:
    """`video_results` keyword arguments from a config's `inference` section."""
    min_pixels = inference.get("min_track_pixels", 0)
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 0:
        raise UserError(f"config.inference.min_track_pixels: must be an integer >= 0, "
                        f"got {min_pixels!r}")
    return {"class_threshold": float(inference.class_threshold),
            "multi_class": bool(inference.multi_class),
            "drop_empty": bool(inference.get("drop_empty_tracks", False)),
            "min_pixels": min_pixels}


def video_results(video_id: int, track_class_probs: Sequence[np.ndarray],
                  track_segmentations: Sequence[list[dict]], category_ids: Sequence[int], *,
                  class_threshold: float = DEFAULT_CLASS_THRESHOLD,
                  multi_class: bool = True, drop_empty: bool = False,
                  min_pixels: int = 0) -> list[dict]:
    """Result entries of one video (SPEC §8.4).

    track_class_probs: per track, its (K+1,) mean class probabilities (index K = no object).
    track_segmentations: per track, its per-frame RLE list (same order).
    category_ids: the dataset id of each contiguous class 0..K-1 (e.g. 1..40 for YTVIS).
    multi_class: one entry per (track, class k < K) with probability > class_threshold, in
    track order then class order; otherwise one entry per track with its arg-max real class.
    drop_empty: leave out tracks whose masks are empty in every frame.
    min_pixels: leave out tracks whose masks cover fewer pixels than this, all frames together.
    """
    min_pixels = max(min_pixels, 1 if drop_empty else 0)
    if len(track_class_probs) != len(track_segmentations):
        raise ValueError("need one segmentation list per track")
    entries = []
    for probs, segmentations in zip(track_class_probs, track_segmentations, strict=True):
        real = np.asarray(probs, np.float64)[:-1]  # drop no-object
        if len(real) != len(category_ids):
            raise ValueError(f"{len(real)} real classes but {len(category_ids)} category ids")
        if min_pixels and track_pixels(segmentations) < min_pixels:
            continue
        classes = (np.flatnonzero(real > class_threshold) if multi_class
                   else [int(np.argmax(real))])
        for k in classes:
            entries.append({"video_id": int(video_id), "score": float(real[k]),
                            "category_id": int(category_ids[k]),
                            "segmentations": segmentations})
    return entries


def write_results_json(path: str, results: list[dict]) -> None:
    """Writes the results list atomically (temp file beside `path`, then rename).

    Entries are serialised one at a time, so writing needs no second in-memory copy of a file
    that can reach gigabytes for long videos. NaN or infinite scores are refused (the servers'
    JSON parsers reject them).
    """
    with atomic_writer(path, "w") as stream:
        stream.write("[")
        for index, entry in enumerate(results):
            if index:
                stream.write(",")
            stream.write(json.dumps(entry, separators=(",", ":"), allow_nan=False))
        stream.write("]")
