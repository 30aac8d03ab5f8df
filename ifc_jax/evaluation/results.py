"""results.json for the YouTube-VIS / OVIS servers (docs/inference.md#results-format).

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
RLE-encoded as soon as they are final, so a long video never holds dense mask stacks. Each
video keeps at most `inference.max_results_per_category` entries per category (the best by
score; 100, the most the evaluator scores, so the metric is unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ifc_jax.data.masks import rle_areas
from ifc_jax.io import atomic_writer


def result_options(inference: Any) -> dict[str, Any]:
    """`video_results` keyword arguments from a validated config's `inference` section."""
    return {"class_threshold": inference.class_threshold,
            "multi_class": inference.multi_class,
            "drop_empty": inference.drop_empty_tracks,
            "min_pixels": inference.min_track_pixels,
            "max_per_category": inference.max_results_per_category}


def video_results(video_id: int, track_class_probs: Sequence[np.ndarray],
                  track_segmentations: Sequence[list[dict]], category_ids: Sequence[int], *,
                  class_threshold: float, multi_class: bool, drop_empty: bool,
                  min_pixels: int, max_per_category: int = 0) -> list[dict]:
    """Result entries of one video (docs/inference.md#outputs).

    track_class_probs: per track, its (K+1,) mean class probabilities (index K = no object).
    track_segmentations: per track, its per-frame RLE list (same order).
    category_ids: the dataset id of each contiguous class 0..K-1 (e.g. 1..40 for YTVIS).
    multi_class: one entry per (track, class k < K) with probability > class_threshold, in
    track order then class order; otherwise one entry per track with its arg-max real class.
    drop_empty: leave out tracks whose masks are empty in every frame.
    min_pixels: leave out tracks whose masks cover fewer pixels than this, all frames together.
    max_per_category: > 0 keeps only the best this many entries of each category (by score;
    among equal scores the earlier entry), in their order: the official metric scores at
    most 100 detections per video and category and drops the rest before matching, so with
    100 the metric cannot change while the file stays bounded (0: keep all).
    """
    min_pixels = max(min_pixels, 1 if drop_empty else 0)
    if len(track_class_probs) != len(track_segmentations):
        raise ValueError("need one segmentation list per track")
    entries = []
    for probs, segmentations in zip(track_class_probs, track_segmentations, strict=True):
        real = np.asarray(probs, np.float64)[:-1]  # drop no-object
        if len(real) != len(category_ids):
            raise ValueError(f"{len(real)} real classes but {len(category_ids)} category ids")
        if min_pixels and int(rle_areas(segmentations).sum()) < min_pixels:
            continue
        classes = (np.flatnonzero(real > class_threshold) if multi_class
                   else [int(np.argmax(real))])
        for k in classes:
            entries.append({"video_id": int(video_id), "score": float(real[k]),
                            "category_id": int(category_ids[k]),
                            "segmentations": segmentations})
    return best_per_category(entries, max_per_category) if max_per_category else entries


def best_per_category(entries: list[dict], limit: int) -> list[dict]:
    """The entries of one video that are among the `limit` best of their category: highest
    score first, ties to the earlier entry (the evaluator's stable sort); order kept."""
    by_category: dict[int, list[int]] = {}
    for index, entry in enumerate(entries):
        by_category.setdefault(entry["category_id"], []).append(index)
    kept = set()
    for indices in by_category.values():
        kept.update(sorted(indices, key=lambda i: -entries[i]["score"])[:limit])
    return [entry for index, entry in enumerate(entries) if index in kept]


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
