"""Reading YouTube-VIS / OVIS ground truth and results files for the metric, with validation.

Every problem is one UserError naming the file (and video / annotation): see ytvis_metric's
docstring for what is refused where the official evaluator would crash or misbehave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ifc_jax.data.masks import (
    SegmentationFormatError,
    check_run_totals,
    check_segmentation,
    compressed_rle_runs,
    rle_areas,
    rle_boxes,
    to_compressed_rle,
)
from ifc_jax.data.ytvis import has_ground_truth
from ifc_jax.io import UserError, read_json

OCCLUSION_SCORES = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}


@dataclass
class TrackRecord:
    """One GT or predicted track. frames: per-frame RLE dicts (None = absent)."""

    id: int
    video_id: int
    category_id: int
    frames: list[dict | None]
    mean_area: float
    score: float = 0.0
    iscrowd: bool = False
    occlusion: float = 0.0
    frame_areas: np.ndarray = field(default=None)  # (F,) int64 mask area per frame, 0 if absent
    boxes: np.ndarray = field(default=None)  # (F, 4) x, y, w, h per frame (for a fast skip)


@dataclass
class GroundTruth:
    source: str
    videos: dict[int, tuple[int, int, int]]  # video id -> (height, width, num_frames)
    category_ids: list[int]
    tracks: list[TrackRecord]
    has_occlusion: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _frame_rle(segmentation: Any, height: int, width: int, results: bool) -> dict | None:
    """One frame entry as a compressed RLE (None if absent: null, {} or [] are all absent)."""
    if segmentation is None or (isinstance(segmentation, dict | list) and not segmentation):
        return None
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes):
        size = segmentation.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(map(_is_int, size))):
            raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
        if tuple(size) != (height, width):
            raise ValueError(f"mask size {size[0]}x{size[1]} differs from the video's "
                             f"{height}x{width}")
        return {"size": [height, width], "counts": segmentation["counts"]}
    if results:
        raise ValueError("result masks must be compressed RLE ({'size', 'counts': str}) or "
                         f"null, got {type(segmentation).__name__}")
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        if list(segmentation.get("size", [])) != [height, width]:
            raise ValueError(f"mask size {segmentation.get('size')} differs from the video's "
                             f"{height}x{width}")
        check_segmentation(segmentation, height, width)  # integer, non-negative, right sum
        return _converted(segmentation, height, width)
    if isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation):
        check_segmentation(segmentation, height, width)  # numbers, in pairs
        return _converted(segmentation, height, width)  # as upstream: no filtering
    raise ValueError(f"unknown segmentation encoding {type(segmentation).__name__}")


def _converted(segmentation: dict | list, height: int, width: int) -> dict:
    """pycocotools' compressed RLE of an uncompressed RLE or polygons; what it cannot read
    (an empty polygon, for one) is a ValueError naming the reason, not its bare Exception."""
    try:
        return to_compressed_rle(segmentation, height, width)
    except Exception as err:  # pycocotools raises plain Exception ("input type is not ...")
        raise ValueError(f"pycocotools cannot read this segmentation ({err})") from err


def _frame_stats(frames: list[dict | None], height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mask areas (F,) int64 and boxes (F, 4), zeros where absent.

    The RLE strings are checked first (pycocotools checks nothing; its IoU loops forever on
    an RLE shorter than the frame): their runs must be non-negative and cover the frame.
    """
    areas = np.zeros(len(frames), np.int64)
    boxes = np.zeros((len(frames), 4))
    present = [t for t, rle in enumerate(frames) if rle is not None]
    if present:
        rles = [frames[t] for t in present]
        _check_runs(rles, present, height, width)
        areas[present] = rle_areas(rles)
        boxes[present] = rle_boxes(rles)
    return areas, boxes


def _check_runs(rles: list[dict], frame_of: list[int], height: int, width: int) -> None:
    """ValueError naming the frame unless each RLE's runs are >= 0 and sum to height*width."""
    try:
        runs, owner = compressed_rle_runs([rle["counts"] for rle in rles])
        check_run_totals(runs, owner, len(rles), height, width)
    except SegmentationFormatError as err:
        raise ValueError(f"frame {frame_of[err.index]}: {err}") from err


def _track_frames(segmentations: Any, height: int, width: int, length: int, *,
                  results: bool, fail: Any, count_error: Any, where: str
                  ) -> tuple[list[dict | None], Any, Any]:
    """A track's per-frame RLEs, areas and boxes, after checking there is one per frame.

    `count_error(count)` words the wrong-length error; decoding errors name `where`.
    """
    if not isinstance(segmentations, list) or len(segmentations) != length:
        raise fail(count_error(len(segmentations) if isinstance(segmentations, list)
                               else "no"))
    try:
        frames = [_frame_rle(s, height, width, results=results) for s in segmentations]
        frame_areas, boxes = _frame_stats(frames, height, width)
    except (ValueError, TypeError) as err:
        raise fail(f"{where}: {err}") from None
    return frames, frame_areas, boxes


def _mean_area(areas: list[Any]) -> float:
    """Mean of the truthy per-frame areas (null and 0 skipped), 0 if none."""
    kept = [a for a in areas if a]
    return float(np.mean(np.asarray(kept, np.float64))) if kept else 0.0


def _occlusion_score(labels: list[Any]) -> float:
    """Mean of the highest ceil(n/2) per-frame occlusion values (null labels skipped)."""
    values = sorted(OCCLUSION_SCORES[label] for label in labels if label is not None)
    top = values[len(values) - math.ceil(len(values) / 2):]
    return sum(top) / len(top)


def parse_ground_truth(content: Any, source: str) -> GroundTruth:
    """Validates a YouTube-VIS / OVIS GT dict; UserError naming `source` on the first problem."""
    def fail(message: str) -> UserError:
        return UserError(f"{source}: {message}")

    if not isinstance(content, dict):
        raise fail("expected a JSON object with 'videos', 'categories' and 'annotations'")
    for key in ("videos", "categories", "annotations"):
        if not isinstance(content.get(key), list):
            raise fail(f"missing or non-list '{key}' (not a YouTube-VIS ground-truth file?)")
    videos = {}
    for position, video in enumerate(content["videos"]):
        if not (isinstance(video, dict) and _is_int(video.get("id"))):
            raise fail(f"videos[{position}] needs an integer 'id'")
        names = video.get("file_names")
        length = len(names) if isinstance(names, list) else video.get("length")
        if not all(_is_int(video.get(k)) and video[k] > 0 for k in ("height", "width")) or \
                not (_is_int(length) and length > 0):
            raise fail(f"video {video['id']} needs positive integer height, width and "
                       "file_names (or length)")
        if video["id"] in videos:
            raise fail(f"video id {video['id']} appears twice")
        videos[video["id"]] = (video["height"], video["width"], length)
    category_ids = []
    for position, category in enumerate(content["categories"]):
        if not (isinstance(category, dict) and _is_int(category.get("id"))):
            raise fail(f"categories[{position}] needs an integer 'id'")
        category_ids.append(category["id"])
    has_occlusion = any(isinstance(a, dict) and "occlusion" in a for a in content["annotations"])
    tracks, seen_ids = [], set()
    for position, ann in enumerate(content["annotations"]):
        where = f"annotations[{position}]"
        if not isinstance(ann, dict):
            raise fail(f"{where} is not an object")
        for key in ("id", "video_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise fail(f"{where} needs an integer '{key}'")
        where = f"annotation id {ann['id']}"
        if ann["id"] in seen_ids:
            raise fail(f"{where} appears twice (annotation ids must be unique)")
        seen_ids.add(ann["id"])
        if ann["video_id"] not in videos or ann["category_id"] not in category_ids:
            continue  # upstream evaluates only the listed videos and categories
        height, width, length = videos[ann["video_id"]]
        frames, frame_areas, boxes = _track_frames(
            ann.get("segmentations"), height, width, length, results=False, fail=fail,
            count_error=lambda count, ann=ann, length=length, where=where: (
                f"{where} has {count} segmentations but video {ann['video_id']} has "
                f"{length} frames"),
            where=where)
        areas = ann.get("areas")
        if areas is None:  # not in the format, but be kind: use the masks' areas
            areas = [int(a) if f is not None else None for a, f in zip(frame_areas, frames,
                                                                       strict=True)]
        if not (isinstance(areas, list) and all(a is None or _is_number(a) for a in areas)):
            raise fail(f"{where}: 'areas' must be a list of numbers or nulls")
        occlusion = 0.0
        if has_occlusion:
            labels = ann.get("occlusion")
            if not isinstance(labels, list) or any(
                    label is not None and label not in OCCLUSION_SCORES for label in labels):
                raise fail(f"{where}: 'occlusion' must be a list of "
                           f"{'/'.join(OCCLUSION_SCORES)} or null (other annotations have it)")
            if all(label is None for label in labels):
                raise fail(f"{where}: 'occlusion' has no label on any frame")
            occlusion = _occlusion_score(labels)
        tracks.append(TrackRecord(
            id=ann["id"], video_id=ann["video_id"], category_id=ann["category_id"],
            frames=frames, mean_area=_mean_area(areas), iscrowd=bool(ann.get("iscrowd", 0)),
            occlusion=occlusion, frame_areas=frame_areas, boxes=boxes))
    return GroundTruth(source, videos, sorted(set(category_ids)), tracks, has_occlusion)


def parse_results(content: Any, gt: GroundTruth, source: str) -> list[TrackRecord]:
    """Validates a results list against the GT; predictions are numbered 1..N in file order."""
    def fail(message: str) -> UserError:
        return UserError(f"{source}: {message}")

    if not isinstance(content, list):
        raise fail("expected a JSON list of predictions ({video_id, category_id, score, "
                   f"segmentations}}), got a JSON {type(content).__name__}")
    predictions = []
    for position, entry in enumerate(content):
        where = f"entry {position}"
        if not isinstance(entry, dict):
            raise fail(f"{where} is not an object")
        for key in ("video_id", "category_id"):
            if not _is_int(entry.get(key)):
                raise fail(f"{where} needs an integer '{key}'")
        if not _is_number(entry.get("score")):
            raise fail(f"{where} needs a finite number 'score'")
        video_id = entry["video_id"]
        if video_id not in gt.videos:
            raise fail(f"{where}: video_id {video_id} is not a video of {gt.source} "
                       "(results and ground truth are for different videos?)")
        height, width, length = gt.videos[video_id]
        frames, frame_areas, boxes = _track_frames(
            entry.get("segmentations"), height, width, length, results=True, fail=fail,
            count_error=lambda count, video_id=video_id, length=length, where=where: (
                f"{where}: {count} segmentations for video {video_id}, which has "
                f"{length} frames in {gt.source}"),
            where=f"{where} (video {video_id})")
        predictions.append(TrackRecord(
            id=position + 1, video_id=video_id, category_id=entry["category_id"],
            frames=frames, mean_area=_mean_area([int(a) for a in frame_areas]),
            score=float(entry["score"]), frame_areas=frame_areas, boxes=boxes))
    return predictions


def require_ground_truth(content: Any, source: str) -> Any:
    """`content` unchanged if it has annotations to score against; a UserError naming
    `source` for a test split (`annotations` missing, null or [], the rule of
    `ifc_jax.data.ytvis.has_ground_truth`): scoring it would print -1 for every metric."""
    if isinstance(content, dict) and not has_ground_truth(content):
        raise UserError(f"{source}: has no annotations to score against (a test split "
                        "without ground truth: submit results.json to the evaluation server, "
                        "or hold out labelled videos with `split`)")
    return content


def load_ground_truth(path: str) -> GroundTruth:
    """The parsed ground truth of the file at `path`; a file without annotations (a test
    split) is refused (`require_ground_truth`)."""
    return parse_ground_truth(require_ground_truth(read_json(path, "ground-truth file"), path),
                              path)


def load_results(path: str, gt: GroundTruth) -> list[TrackRecord]:
    return parse_results(read_json(path, "results file"), gt, path)
