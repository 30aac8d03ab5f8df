"""The YouTube-VIS / OVIS video instance segmentation metric, as the official servers compute it.

Described in `docs/metric.md` (the behaviour of youtubevos/cocoapi `ytvoseval`
and qjy981010/cocoapi `oviseval`), quirks included:
  * track IoU walks the per-frame lists in lockstep: Σ_t |d∩g| / Σ_t |d∪g| (0 if the union is 0);
  * maxDets (1, 10, 100) count per video AND per category; beyond the top 100 a prediction is
    dropped;
  * area ranges 128² / 256² (inclusive on both ends) on the mean of the non-null, non-zero
    per-frame areas (GT: the JSON `areas` as given; predictions: their masks);
  * COCO's greedy matching (stable score sort, ignored GTs last, equal IoU → later GT wins,
    crowd GTs reusable, a GT with id 0 never yields a true positive);
  * crowd IoU is the plain track IoU; stable ties across videos in sorted video-id order;
  * IoU and recall thresholds built with np.linspace exactly as upstream (0.07 etc. differ
    from i/100 in the last bit, and that decides ties).
Per category: `Evaluation.per_category_ap`, each category's AP from the same accumulation
(`category_average_precision`); their mean over the categories with GT is the summary AP.
OVIS (GT with per-frame `occlusion` labels): a GT track's occlusion score is the mean of the
highest ceil(n/2) of its non-null per-frame labels (no 0, slight 0.25, severe 0.75); ranges
slight [0, 0.25], moderate [0.25, 0.5], heavy [0.5, 1] (inclusive; oviseval calls them light /
medium / heavy, the OVIS paper APso / APmo / APho), area range "all", 100 detections; GTs
outside the range are ignored, unmatched predictions are not.

Where upstream would crash or silently misbehave we stop with one clear line instead (a
UserError naming the file): predictions for videos not in the GT, prediction lists whose length
differs from the video's frame count (upstream truncates silently; the OVIS fork asserts), masks
whose size differs from the video's, encodings other than compressed RLE in results, duplicate
GT ids, GT tracks whose frame count differs from their video's. As upstream, predictions for
categories not in the GT are dropped (`Evaluation.dropped_predictions` counts them) and GT
annotations of videos or categories missing from the `videos` / `categories` lists are not
evaluated. GT without `areas` gets its masks' areas (upstream would crash). An empty results
list scores 0 (-1 where undefined) instead of crashing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ifc_jax.data.masks import rle_intersection_area
from ifc_jax.evaluation.ytvis_io import (  # noqa: F401  (re-exported: the metric's inputs)
    OCCLUSION_SCORES,
    GroundTruth,
    TrackRecord,
    load_ground_truth,
    load_results,
    parse_ground_truth,
    parse_results,
)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 128.0**2), "medium": (128.0**2, 256.0**2),
               "large": (256.0**2, 1e10)}
OCCLUSION_RANGES = {"all": (0.0, 1.0), "slight": (0.0, 0.25), "moderate": (0.25, 0.5),
                    "heavy": (0.5, 1.0)}
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
               "ARl")
OCCLUSION_KEYS = ("AP_slight", "AP_moderate", "AP_heavy", "AR_slight", "AR_moderate", "AR_heavy")


@dataclass
class Evaluation:
    metrics: dict[str, float]
    num_predictions: int
    dropped_predictions: int  # predictions whose category is not in the GT
    videos_without_predictions: int
    # category id -> its AP (IoU 0.50:0.95, area all, maxDet 100), -1 where undefined:
    # `category_average_precision`, from the same matching and accumulation as metrics["AP"].
    per_category_ap: dict[int, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- evaluation

def track_iou_matrix(predictions: list[TrackRecord], gts: list[TrackRecord]) -> np.ndarray:
    """(D, G) track IoUs: Σ_t |d∩g| / Σ_t |d∪g| over the frames walked in lockstep, 0 if the
    union is 0. Absent frames act as empty masks, which gives the same sums as upstream."""
    ious = np.zeros((len(predictions), len(gts)))
    for d, pred in enumerate(predictions):
        for g, gt in enumerate(gts):
            intersection = 0
            for t in np.flatnonzero((pred.frame_areas > 0) & (gt.frame_areas > 0)):
                (x1, y1, w1, h1), (x2, y2, w2, h2) = pred.boxes[t], gt.boxes[t]
                if x1 >= x2 + w2 or x2 >= x1 + w1 or y1 >= y2 + h2 or y2 >= y1 + h1:
                    continue  # disjoint boxes: nothing to intersect
                intersection += rle_intersection_area(pred.frames[t], gt.frames[t])
            union = int(pred.frame_areas.sum()) + int(gt.frame_areas.sum()) - intersection
            ious[d, g] = intersection / union if union > 0 else 0.0
    return ious


@dataclass
class PairResult:
    """Greedy matching of one (video, category) at one (area, occlusion) setting.

    scores (D,) in descending order; matched, ignored: (num IoU thresholds, D) bool;
    num_gt: non-ignored GT tracks.
    """

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_gt: int


def match_pair(predictions: list[TrackRecord], gts: list[TrackRecord], ious: np.ndarray,
               area_range: tuple[float, float], occlusion_range: tuple[float, float]
               ) -> PairResult:
    """COCO's greedy matching. `predictions` sorted by descending score (stable), at most 100;
    ious: (D, G) against `gts` in file order."""
    gt_ignored = np.array([g.iscrowd or not area_range[0] <= g.mean_area <= area_range[1]
                           or not occlusion_range[0] <= g.occlusion <= occlusion_range[1]
                           for g in gts], bool)
    order = np.argsort(gt_ignored, kind="mergesort")  # non-ignored first, stable
    gt_ignored = gt_ignored[order]
    crowd = [gts[i].iscrowd for i in order]
    gt_ids = [gts[i].id for i in order]
    ious = ious[:, order]
    num_thresholds, num_preds = len(IOU_THRESHOLDS), len(predictions)
    matched = np.zeros((num_thresholds, num_preds), bool)
    ignored = np.zeros((num_thresholds, num_preds), bool)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(gts), bool)
        for d in range(num_preds):
            best_iou, best = min(threshold, 1 - 1e-10), -1
            for g in range(len(gts)):
                if taken[g] and not crowd[g]:
                    continue
                if best > -1 and not gt_ignored[best] and gt_ignored[g]:
                    break  # holds a real GT: never trade it for an ignored one
                if ious[d, g] < best_iou:
                    continue
                best_iou, best = ious[d, g], g
            if best == -1:
                continue
            taken[best] = True
            ignored[t, d] = gt_ignored[best]
            matched[t, d] = gt_ids[best] != 0  # upstream's "0 = unmatched" bookkeeping
    outside = np.array([not area_range[0] <= p.mean_area <= area_range[1] for p in predictions],
                       bool)
    ignored |= ~matched & outside[None, :]
    return PairResult(np.array([p.score for p in predictions], np.float64), matched, ignored,
                      int(np.count_nonzero(~gt_ignored)))


def accumulate(pairs: list[PairResult], max_dets: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Precision (T, R) and recall (T,) of one category over its videos (in sorted video-id
    order), keeping each video's top `max_dets`; None if no non-ignored GT (undefined)."""
    num_gt = sum(p.num_gt for p in pairs)
    if num_gt == 0:
        return None
    scores = np.concatenate([p.scores[:max_dets] for p in pairs])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([p.matched[:, :max_dets] for p in pairs], axis=1)[:, order]
    ignored = np.concatenate([p.ignored[:, :max_dets] for p in pairs], axis=1)[:, order]
    true_pos = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    false_pos = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)))
    recall = np.zeros(len(IOU_THRESHOLDS))
    num_dets = len(scores)
    if num_dets == 0:
        return precision, recall
    for t in range(len(IOU_THRESHOLDS)):
        rc = true_pos[t] / num_gt
        pr = true_pos[t] / (true_pos[t] + false_pos[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # the non-increasing envelope
        recall[t] = rc[-1]
        positions = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
        reached = positions < num_dets
        precision[t, reached] = pr[positions[reached]]
    return precision, recall


def _mean_defined(values: list[np.ndarray]) -> float:
    stacked = np.concatenate([v.ravel() for v in values]) if values else np.zeros(0)
    defined = stacked[stacked > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def category_average_precision(pairs: list[PairResult]) -> float:
    """One category's AP from its PairResults (sorted video-id order) at area "all": the mean
    of its precision over the 10 IoU and 101 recall thresholds at maxDet 100, -1 if it has
    no non-ignored GT. The summary AP averages the same (T, R) blocks of every defined
    category, so it equals the mean of these values over the defined categories (as COCO
    averages), up to rounding."""
    result = accumulate(pairs, MAX_DETS[-1])
    return -1.0 if result is None else _mean_defined([result[0]])


def evaluate(gt: GroundTruth, predictions: list[TrackRecord]) -> Evaluation:
    """All summary metrics (fractions, -1 where undefined) for parsed GT and predictions."""
    known = set(gt.category_ids)
    kept = [p for p in predictions if p.category_id in known]
    gts_by_pair, preds_by_pair = defaultdict(list), defaultdict(list)
    for track in gt.tracks:
        gts_by_pair[track.video_id, track.category_id].append(track)
    for pred in kept:
        preds_by_pair[pred.video_id, pred.category_id].append(pred)

    settings = [("all", "all"), ("small", "all"), ("medium", "all"), ("large", "all")]
    if gt.has_occlusion:
        settings += [("all", "slight"), ("all", "moderate"), ("all", "heavy")]
    # pairs[setting][category] = PairResults in sorted video-id order
    pairs: dict[tuple[str, str], dict[int, list[PairResult]]] = {
        s: defaultdict(list) for s in settings}
    for video_id, category_id in sorted(set(gts_by_pair) | set(preds_by_pair)):
        gts = gts_by_pair[video_id, category_id]
        preds = preds_by_pair[video_id, category_id]
        order = np.argsort([-p.score for p in preds], kind="mergesort")[:MAX_DETS[-1]]
        preds = [preds[i] for i in order]
        ious = track_iou_matrix(preds, gts)
        for area, occlusion in settings:
            pairs[area, occlusion][category_id].append(match_pair(
                preds, gts, ious, AREA_RANGES[area], OCCLUSION_RANGES[occlusion]))

    def summary(setting: tuple[str, str], max_dets: int, average_precision: bool,
                threshold_index: int | None = None) -> float:
        values = []
        for category_id in gt.category_ids:
            result = accumulate(pairs[setting].get(category_id, []), max_dets)
            if result is None:
                continue
            chosen = result[0] if average_precision else result[1]
            values.append(chosen if threshold_index is None else chosen[threshold_index])
        return _mean_defined(values)

    iou50 = int(np.flatnonzero(IOU_THRESHOLDS == 0.5)[0])
    iou75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])
    metrics = {
        "AP": summary(("all", "all"), 100, True),
        "AP50": summary(("all", "all"), 100, True, iou50),
        "AP75": summary(("all", "all"), 100, True, iou75),
        "APs": summary(("small", "all"), 100, True),
        "APm": summary(("medium", "all"), 100, True),
        "APl": summary(("large", "all"), 100, True),
        "AR1": summary(("all", "all"), 1, False),
        "AR10": summary(("all", "all"), 10, False),
        "AR100": summary(("all", "all"), 100, False),
        "ARs": summary(("small", "all"), 100, False),
        "ARm": summary(("medium", "all"), 100, False),
        "ARl": summary(("large", "all"), 100, False),
    }
    if gt.has_occlusion:
        for level in ("slight", "moderate", "heavy"):
            metrics[f"AP_{level}"] = summary(("all", level), 100, True)
        for level in ("slight", "moderate", "heavy"):
            metrics[f"AR_{level}"] = summary(("all", level), 100, False)
    per_category_ap = {category_id: category_average_precision(
        pairs["all", "all"].get(category_id, [])) for category_id in gt.category_ids}
    videos_with_predictions = {p.video_id for p in kept}
    return Evaluation(metrics, len(kept), len(predictions) - len(kept),
                      len(set(gt.videos) - videos_with_predictions), per_category_ap)


def evaluate_results(gt: dict, results: list[dict], *, gt_source: str = "ground truth",
                     results_source: str = "results") -> dict[str, float]:
    """The metrics of in-memory GT (a YouTube-VIS/OVIS annotation dict) and results list.

    Keys: METRIC_KEYS, plus OCCLUSION_KEYS when the GT has `occlusion` labels. Values are
    fractions in [0, 1], -1 where undefined. Inputs are not modified. Bad input raises
    UserError naming `gt_source` / `results_source`.
    """
    parsed_gt = parse_ground_truth(gt, gt_source)
    return evaluate(parsed_gt, parse_results(results, parsed_gt, results_source)).metrics
