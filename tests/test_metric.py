"""The YouTube-VIS / OVIS metric: hand-worked cases and randomised sets against an independent,
deliberately slow re-derivation of the official algorithm written here from
docs/metric.md (dense numpy masks, plain loops, no code shared with the evaluator).
"""

from __future__ import annotations

import math

import numpy as np
import pycocotools.mask as mask_util
import pytest

from ifc_jax.evaluation.ytvis_metric import METRIC_KEYS, OCCLUSION_KEYS, evaluate_results

# ============================================================================ the reference
# Upstream builds its thresholds with np.linspace; at 10 of the 101 recall thresholds that is
# not the same float as i / 100, and the difference decides whether e.g. recall 7/100 reaches
# the 0.07 threshold. So the reference uses the same construction.
REF_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
REF_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
REF_AREAS = {"all": (0, 1e10), "small": (0, 128**2), "medium": (128**2, 256**2),
             "large": (256**2, 1e10)}
REF_OCCLUSION = {"all": (0, 1), "slight": (0, 0.25), "moderate": (0.25, 0.5), "heavy": (0.5, 1)}
REF_OCCLUSION_VALUE = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}


def ref_track_iou(pred_masks, gt_masks):
    """Lockstep walk over frames: sum of intersections over sum of unions."""
    inter = union = 0
    for d, g in zip(pred_masks, gt_masks, strict=False):
        if d is not None and g is not None:
            inter += int(np.logical_and(d, g).sum())
            union += int(np.logical_or(d, g).sum())
        elif g is not None:
            union += int(g.sum())
        elif d is not None:
            union += int(d.sum())
    return inter / union if union > 0 else 0.0


def ref_mean_area(areas):
    values = [a for a in areas if a is not None and a != 0]
    return math.fsum(values) / len(values) if values else 0.0


def ref_occlusion(labels):
    values = sorted(REF_OCCLUSION_VALUE[x] for x in labels if x is not None)
    keep = math.ceil(len(values) / 2)
    top = values[len(values) - keep:]
    return sum(top) / len(top)


def reference_metrics(video_ids, category_ids, gt_tracks, predictions):
    """Official YouTube-VIS (and OVIS) summary numbers, the slow way.

    gt_tracks: dicts id, video_id, category_id, iscrowd, masks (list of bool arrays / None),
    areas (JSON areas), optional occlusion. predictions: dicts video_id, category_id, score,
    masks. Returns the metric dict.
    """
    has_occlusion = any("occlusion" in g for g in gt_tracks)
    for g in gt_tracks:
        g["_area"] = ref_mean_area(g["areas"])
        g["_occ"] = ref_occlusion(g["occlusion"]) if has_occlusion else 0.0
    preds = [dict(p, _area=ref_mean_area([int(m.sum()) if m is not None else None
                                          for m in p["masks"]]))
             for p in predictions if p["category_id"] in category_ids]
    ranked, gts, iou_cache = {}, {}, {}
    for v in sorted(video_ids):
        for c in category_ids:
            candidates = [p for p in preds if p["video_id"] == v and p["category_id"] == c]
            ranked[v, c] = sorted(candidates, key=lambda p: -p["score"])[:100]  # stable
            gts[v, c] = [g for g in gt_tracks if g["video_id"] == v and g["category_id"] == c]
            for i, p in enumerate(ranked[v, c]):
                for g in gts[v, c]:
                    iou_cache[v, c, i, g["id"]] = ref_track_iou(p["masks"], g["masks"])

    def one_setting(c, area_name, occ_name, max_det):
        lo, hi = REF_AREAS[area_name]
        olo, ohi = REF_OCCLUSION[occ_name]
        records = {t: [] for t in range(10)}
        num_gt = 0
        for v in sorted(video_ids):
            video_gts = gts[v, c]
            ign = [bool(g["iscrowd"]) or not lo <= g["_area"] <= hi
                   or not olo <= g["_occ"] <= ohi for g in video_gts]
            num_gt += ign.count(False)
            order = [j for j in range(len(video_gts)) if not ign[j]] + \
                    [j for j in range(len(video_gts)) if ign[j]]
            for t, threshold in enumerate(REF_IOU_THRESHOLDS):
                taken = set()
                for i, p in enumerate(ranked[v, c]):
                    best, best_iou = None, min(threshold, 1 - 1e-10)
                    for j in order:
                        if j in taken and not video_gts[j]["iscrowd"]:
                            continue
                        if best is not None and not ign[best] and ign[j]:
                            break
                        iou = iou_cache[v, c, i, video_gts[j]["id"]]
                        if iou >= best_iou:
                            best, best_iou = j, iou
                    outside = not lo <= p["_area"] <= hi
                    if best is None:
                        status = "ignored" if outside else "fp"
                    else:
                        taken.add(best)
                        if video_gts[best]["id"] == 0:  # id 0 reads as "unmatched" upstream
                            status = "ignored" if ign[best] or outside else "fp"
                        else:
                            status = "ignored" if ign[best] else "tp"
                    if i < max_det:
                        records[t].append((p["score"], status))
        if num_gt == 0:
            return None
        precisions, recalls = [], []
        for t in range(10):
            ordered = sorted(records[t], key=lambda r: -r[0])  # stable: video order, then rank
            tp = fp = 0
            rc, pr = [], []
            for _, status in ordered:
                tp += status == "tp"
                fp += status == "fp"
                rc.append(tp / num_gt)
                pr.append(tp / (tp + fp + np.spacing(1)))
            for i in range(len(pr) - 2, -1, -1):
                pr[i] = max(pr[i], pr[i + 1])
            recalls.append(rc[-1] if rc else 0.0)
            for r in REF_RECALL_THRESHOLDS:
                hit = next((i for i, x in enumerate(rc) if x >= r), None)
                precisions.append(pr[hit] if hit is not None else 0.0)
        return precisions, recalls

    def summary(ap, area="all", occ="all", max_det=100, iou=None):
        values = []
        for c in category_ids:
            result = one_setting(c, area, occ, max_det)
            if result is None:
                continue
            precisions, recalls = result
            if ap:
                rows = [precisions[t * 101:(t + 1) * 101] for t in range(10)]
                if iou is not None:
                    rows = [rows[t] for t in range(10) if REF_IOU_THRESHOLDS[t] == iou]
                values += [x for row in rows for x in row]
            else:
                values += [recalls[t] for t in range(10)
                           if iou is None or REF_IOU_THRESHOLDS[t] == iou]
        return math.fsum(values) / len(values) if values else -1.0

    out = {"AP": summary(True), "AP50": summary(True, iou=0.5), "AP75": summary(True, iou=0.75),
           "APs": summary(True, "small"), "APm": summary(True, "medium"),
           "APl": summary(True, "large"), "AR1": summary(False, max_det=1),
           "AR10": summary(False, max_det=10), "AR100": summary(False),
           "ARs": summary(False, "small"), "ARm": summary(False, "medium"),
           "ARl": summary(False, "large")}
    if has_occlusion:
        for level in ("slight", "moderate", "heavy"):
            out[f"AP_{level}"] = summary(True, occ=level)
        for level in ("slight", "moderate", "heavy"):
            out[f"AR_{level}"] = summary(False, occ=level)
    return out


# ============================================================================ JSON builders

def compressed_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("utf-8")}


def uncompressed_rle(mask):
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def gt_json(videos, category_ids, gt_tracks, use_length=False, encodings=None):
    """videos: {id: (height, width, frames)}. encodings: callable(mask) -> JSON entry."""
    encode = encodings or compressed_rle
    out = {"videos": [], "categories": [{"id": c, "name": f"c{c}"} for c in category_ids],
           "annotations": []}
    for vid, (h, w, frames) in videos.items():
        video = {"id": vid, "height": h, "width": w}
        if use_length:
            video["length"] = frames
        else:
            video["file_names"] = [f"v{vid}/{t:05d}.jpg" for t in range(frames)]
        out["videos"].append(video)
    for g in gt_tracks:
        ann = {"id": g["id"], "video_id": g["video_id"], "category_id": g["category_id"],
               "iscrowd": int(g["iscrowd"]), "areas": g["areas"],
               "segmentations": [None if m is None else encode(m) for m in g["masks"]]}
        if "occlusion" in g:
            ann["occlusion"] = g["occlusion"]
        out["annotations"].append(ann)
    return out


def results_json(predictions, absent=None):
    return [{"video_id": p["video_id"], "category_id": p["category_id"], "score": p["score"],
             "segmentations": [absent if m is None else compressed_rle(m) for m in p["masks"]]}
            for p in predictions]


def rect(h, w, y0, x0, y1, x1):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def gt_track(track_id, video_id, category_id, masks, iscrowd=0, areas=None, **extra):
    if areas is None:
        areas = [None if m is None else int(m.sum()) for m in masks]
    return dict(id=track_id, video_id=video_id, category_id=category_id, iscrowd=iscrowd,
                masks=masks, areas=areas, **extra)


def pred(video_id, category_id, score, masks):
    return dict(video_id=video_id, category_id=category_id, score=score, masks=masks)


def check(videos, category_ids, gts, preds, expected=None, absent=None, **gt_options):
    """Our metric == the reference (1e-9, same -1s) and == hand-worked values if given.

    absent: how results write a frame without mask (null, {} and [] all mean absent)."""
    ours = evaluate_results(gt_json(videos, category_ids, gts, **gt_options),
                            results_json(preds, absent))
    reference = reference_metrics(list(videos), category_ids, gts, preds)
    assert list(ours) == list(reference)
    for key, value in reference.items():
        assert abs(ours[key] - value) <= 1e-9, (key, ours[key], value)
    for key, value in (expected or {}).items():
        assert abs(ours[key] - value) <= 1e-12, (key, ours[key], value)
    return ours


# ============================================================================ hand-worked cases
H, W = 10, 10


def test_perfect_prediction():
    # One small GT track (area 4 per frame), one identical prediction: every AP/AR over the
    # small / all ranges is 1; medium and large have no GT, so they are -1.
    masks = [rect(H, W, 0, 0, 2, 2), rect(H, W, 1, 1, 3, 3)]
    ours = check({1: (H, W, 2)}, [1], [gt_track(1, 1, 1, masks)], [pred(1, 1, 0.9, masks)],
                 {"AP": 1, "AP50": 1, "AP75": 1, "APs": 1, "APm": -1, "APl": -1, "AR1": 1,
                  "AR10": 1, "AR100": 1, "ARs": 1, "ARm": -1, "ARl": -1})
    assert list(ours) == list(METRIC_KEYS)


def test_lockstep_track_iou():
    # GT: frame 0 a 2x2 square (4 px), frame 1 absent, frame 2 a 2x3 block (6 px).
    # Prediction: frame 0 a 2x2 square overlapping 2 px, frame 1 3 px (only predicted),
    # frame 2 exact. I = 2 + 0 + 6 = 8, U = (4 + 4 - 2) + 3 + 6 = 15, IoU = 8/15 = 0.533:
    # a true positive at IoU 0.50 only, so AP = 1/10 (precision 1 at 1 of 10 thresholds),
    # AP50 = 1, AP75 = 0, AR100 = 1/10.
    gt_masks = [rect(H, W, 0, 0, 2, 2), None, rect(H, W, 4, 4, 6, 7)]
    pred_masks = [rect(H, W, 0, 1, 2, 3), rect(H, W, 8, 0, 9, 3), rect(H, W, 4, 4, 6, 7)]
    check({1: (H, W, 3)}, [1], [gt_track(1, 1, 1, gt_masks)], [pred(1, 1, 0.8, pred_masks)],
          {"AP": 0.1, "AP50": 1.0, "AP75": 0.0, "AR100": 0.1, "AR1": 0.1})


def test_score_order_and_per_category_max_dets():
    # A wrong prediction (IoU 0) scored 0.9 above the exact one (0.5): ranks FP, TP, so
    # precision 0.5 at recall 1 and the envelope makes it 0.5 everywhere: AP = 0.5.
    # AR1 keeps only the top prediction of the (video, category): the FP, so AR1 = 0.
    gt_masks = [rect(H, W, 0, 0, 3, 3)]
    wrong = [rect(H, W, 6, 6, 9, 9)]
    gts = [gt_track(1, 1, 1, gt_masks)]
    check({1: (H, W, 1)}, [1, 2], gts, [pred(1, 1, 0.9, wrong), pred(1, 1, 0.5, gt_masks)],
          {"AP": 0.5, "AR1": 0.0, "AR10": 1.0, "AR100": 1.0})
    # maxDets count per category: the same wrong prediction in category 2 (no GT there, so
    # category 2 is undefined and left out) does not push the TP out of the top 1.
    check({1: (H, W, 1)}, [1, 2], gts, [pred(1, 2, 0.9, wrong), pred(1, 1, 0.5, gt_masks)],
          {"AP": 1.0, "AR1": 1.0})


def test_crowd_is_ignored_but_plain_iou():
    # GT: a real track (top-left) and a crowd track (bottom half, 50 px).
    # P1 (0.95) lies inside the crowd region (14 of its 50 px): plain track IoU 0.28 < 0.5,
    #   so it is NOT absorbed by the crowd: a false positive.
    # P2 (0.9) equals the crowd region: matched to an ignored GT, so neither TP nor FP.
    # P3 (0.8) equals the real track: TP. Ranked FP, (ignored), TP: precision 1/2 at recall 1,
    # AP = 0.5; the crowd does not count towards recall, AR100 = 1.
    real = [rect(H, W, 0, 0, 2, 2)]
    crowd = [rect(H, W, 5, 0, 10, 10)]
    quarter = [np.zeros((H, W), bool)]
    quarter[0][5:10, 0:2] = True
    quarter[0][5:7, 2:4] = True  # 14 px inside the crowd region: IoU 14/50 = 0.28
    check({1: (H, W, 1)}, [1], [gt_track(1, 1, 1, real), gt_track(2, 1, 1, crowd, iscrowd=1)],
          [pred(1, 1, 0.95, quarter), pred(1, 1, 0.9, crowd), pred(1, 1, 0.8, real)],
          {"AP": 0.5, "AR100": 1.0})


def test_area_ranges_are_inclusive_and_use_json_areas():
    # The GT's JSON areas say 16384 per frame (exactly 128^2), whatever its mask: it is both
    # small and medium. A matching prediction is a TP in both ranges; large has no GT.
    masks = [rect(H, W, 0, 0, 4, 4)] * 2
    check({1: (H, W, 2)}, [1], [gt_track(1, 1, 1, masks, areas=[16384, 16384])],
          [pred(1, 1, 0.7, masks)], {"APs": 1, "APm": 1, "APl": -1, "ARs": 1, "ARm": 1})


def test_unmatched_prediction_outside_area_range_is_ignored():
    # GT large by its JSON areas (70000). A stray prediction of 4 px (small) ranks first.
    # All areas: FP then TP, AP 0.5. Large range: the stray one is outside, so ignored: AP 1.
    masks = [rect(H, W, 0, 0, 5, 5)]
    check({1: (H, W, 1)}, [1], [gt_track(1, 1, 1, masks, areas=[70000])],
          [pred(1, 1, 0.9, [rect(H, W, 8, 8, 10, 10)]), pred(1, 1, 0.5, masks)],
          {"AP": 0.5, "APl": 1.0, "APs": -1})


def test_score_ties_are_stable_in_file_then_video_order():
    gt_masks = [rect(H, W, 0, 0, 3, 3)]
    wrong = [rect(H, W, 6, 6, 9, 9)]
    gts = [gt_track(1, 1, 1, gt_masks)]
    # Same score: the file order decides within a video. FP first -> AP 0.5; TP first -> 1.
    check({1: (H, W, 1)}, [1], gts, [pred(1, 1, 0.5, wrong), pred(1, 1, 0.5, gt_masks)],
          {"AP": 0.5})
    check({1: (H, W, 1)}, [1], gts, [pred(1, 1, 0.5, gt_masks), pred(1, 1, 0.5, wrong)],
          {"AP": 1.0})
    # Across videos ties go in sorted video-id order, not file order: video 1's FP comes
    # before video 2's TP although the file lists video 2 first -> AP 0.5.
    gts2 = [gt_track(1, 2, 1, gt_masks)]
    check({2: (H, W, 1), 1: (H, W, 1)}, [1], gts2,
          [pred(2, 1, 0.5, gt_masks), pred(1, 1, 0.5, wrong)], {"AP": 0.5})


def test_max_dets_drop_predictions_beyond_100():
    # 99 strays above the exact prediction: it is the 100th, precision 1/100 at recall 1,
    # AP = 0.01. With one more stray the exact one falls outside the top 100: AP = AR = 0.
    gt_masks = [rect(H, W, 0, 0, 3, 3)]
    strays = [pred(1, 1, 0.9, [rect(H, W, 7, 7, 9, 9)]) for _ in range(99)]
    check({1: (H, W, 1)}, [1], [gt_track(1, 1, 1, gt_masks)],
          strays + [pred(1, 1, 0.1, gt_masks)], {"AP": 0.01, "AR100": 1.0, "AR10": 0.0})
    check({1: (H, W, 1)}, [1], [gt_track(1, 1, 1, gt_masks)],
          strays * 2 + [pred(1, 1, 0.1, gt_masks)], {"AP": 0.0, "AR100": 0.0})


def test_recall_thresholds_are_linspace_values():
    # 10 GT tracks, 7 found with precision 1: recall 0.7. np.linspace(0, 1, 101)[70] is
    # 0.7000000000000001 > 0.7, so threshold 0.70 is NOT reached: precision 1 at the 70
    # thresholds 0.00..0.69 only, AP = 70/101 (i/100 thresholds would give 71/101).
    masks = [[rect(H, W, i, 0, i + 1, 5)] for i in range(10)]
    gts = [gt_track(i + 1, 1, 1, masks[i]) for i in range(10)]
    check({1: (H, W, 1)}, [1], gts, [pred(1, 1, 0.9, masks[i]) for i in range(7)],
          {"AP": 70 / 101, "AR100": 0.7})


def test_gt_id_zero_never_matches():
    # Upstream quirk: a GT with id 0 is "matched" to id 0 = unmatched, so the exact
    # prediction is a false positive and the GT stays missed.
    masks = [rect(H, W, 0, 0, 3, 3)]
    check({1: (H, W, 1)}, [1], [gt_track(0, 1, 1, masks)], [pred(1, 1, 0.9, masks)],
          {"AP": 0.0, "AR100": 0.0})


def test_equal_iou_goes_to_the_later_gt_and_duplicates():
    # Two identical GT tracks and two identical predictions: each prediction takes a free GT
    # (the later one on ties), both are TPs: AP 1. One prediction alone: recall 1/2, so
    # precision 1 at the 51 recall thresholds 0.00..0.50 and 0 above: AP = 51/101.
    masks = [rect(H, W, 0, 0, 3, 3)]
    gts = [gt_track(1, 1, 1, masks), gt_track(2, 1, 1, masks)]
    check({1: (H, W, 1)}, [1], gts, [pred(1, 1, 0.9, masks), pred(1, 1, 0.8, masks)],
          {"AP": 1.0, "AR100": 1.0})
    check({1: (H, W, 1)}, [1], gts, [pred(1, 1, 0.9, masks)], {"AP": 51 / 101, "AR100": 0.5})


def test_empty_results_score_zero():
    # GT in two categories, all small: AP and AR are 0 (not -1: the categories have GT);
    # the medium and large ranges have no GT: -1.
    masks = [rect(H, W, 0, 0, 3, 3)]
    gts = [gt_track(1, 1, 1, masks), gt_track(2, 1, 2, masks)]
    ours = check({1: (H, W, 1)}, [1, 2], gts, [],
                 {"AP": 0, "AP50": 0, "AP75": 0, "APs": 0, "APm": -1, "APl": -1, "AR1": 0,
                  "AR10": 0, "AR100": 0, "ARs": 0, "ARm": -1, "ARl": -1})
    assert set(ours) == set(METRIC_KEYS)
    # No GT annotations at all: everything undefined.
    ours = evaluate_results(gt_json({1: (H, W, 1)}, [1], []), [])
    assert all(value == -1 for value in ours.values())


def test_unknown_category_predictions_are_dropped():
    masks = [rect(H, W, 0, 0, 3, 3)]
    check({1: (H, W, 1)}, [1], [gt_track(1, 1, 1, masks)],
          [pred(1, 7, 0.99, [rect(H, W, 6, 6, 9, 9)]), pred(1, 1, 0.5, masks)], {"AP": 1.0})


def test_ovis_occlusion_ranges():
    # Occlusion score = mean of the highest ceil(n/2) non-null labels:
    #   track 1: no, slight, severe, null -> values 0, .25, .75 -> top 2 -> 0.5 (moderate AND
    #            heavy: ranges are inclusive); track 2: no, no, slight -> top 2 = 0, .25 ->
    #            0.125 (slight).
    # P3 (0.99) is a stray: a FP in every occlusion range (not filtered by occlusion).
    # P1 (0.9) = track 1, P2 (0.8) = track 2.
    #   slight:   FP, ignored (track 1 out of range), TP -> AP 0.5
    #   moderate: FP, TP, ignored -> AP 0.5; heavy: the same -> 0.5
    #   all:      FP, TP, TP -> rc 0, .5, 1; pr 0, .5, 2/3 -> envelope 2/3: AP 2/3.
    m1 = [rect(H, W, 0, 0, 3, 3)] * 3 + [None]
    m2 = [rect(H, W, 5, 5, 8, 8)] * 3 + [None]
    stray = [rect(H, W, 0, 6, 2, 9)] * 4
    gts = [gt_track(1, 1, 1, m1, occlusion=["no_occlusion", "slight_occlusion",
                                            "severe_occlusion", None]),
           gt_track(2, 1, 1, m2, occlusion=["no_occlusion", "no_occlusion",
                                            "slight_occlusion", None])]
    ours = check({1: (H, W, 4)}, [1], gts,
                 [pred(1, 1, 0.99, stray), pred(1, 1, 0.9, m1), pred(1, 1, 0.8, m2)],
                 {"AP": 2 / 3, "AP_slight": 0.5, "AP_moderate": 0.5, "AP_heavy": 0.5,
                  "AR_slight": 1.0, "AR_moderate": 1.0, "AR_heavy": 1.0})
    assert list(ours) == list(METRIC_KEYS) + list(OCCLUSION_KEYS)


def test_gt_encodings_uncompressed_rle_and_length():
    # The same case with GT masks as uncompressed RLE and videos given by 'length' scores the
    # same as the reference (which sees the dense masks).
    gt_masks = [rect(H, W, 0, 0, 2, 2), None, rect(H, W, 4, 4, 6, 7)]
    pred_masks = [rect(H, W, 0, 1, 2, 3), rect(H, W, 8, 0, 9, 3), rect(H, W, 4, 4, 6, 7)]
    check({1: (H, W, 3)}, [1], [gt_track(1, 1, 1, gt_masks)], [pred(1, 1, 0.8, pred_masks)],
          {"AP50": 1.0}, use_length=True, encodings=uncompressed_rle)


def test_gt_polygons_are_rasterised_like_pycocotools():
    # A polygon GT frame scores as its pycocotools rasterisation given as RLE.
    polygon = [[1.0, 1.0, 7.0, 1.0, 7.0, 6.0, 1.0, 6.0]]
    raster = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygon, H, W))).astype(bool)
    gt = gt_json({1: (H, W, 1)}, [1], [gt_track(1, 1, 1, [raster])])
    shifted = np.roll(raster, 1, axis=1)
    results = results_json([pred(1, 1, 0.9, [shifted])])
    expected = evaluate_results(gt, results)
    gt["annotations"][0]["segmentations"] = [polygon]
    assert evaluate_results(gt, results) == expected
    assert 0 < expected["AP"] < 1


# ============================================================================ randomised sets

def _random_rect_mask(rng, h, w):
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
    return rect(h, w, y0, x0, y1, x1)


def _jitter(rng, mask):
    if mask is None:
        return None
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask.copy()
    h, w = mask.shape
    if rng.random() < 0.2:
        return mask.copy()
    dy, dx = rng.integers(-1, 2, size=2) * max(1, (ys.max() - ys.min()) // 8)
    grow = rng.integers(-1, 2)
    return rect(h, w, max(0, ys.min() + dy - grow), max(0, xs.min() + dx - grow),
                min(h, ys.max() + 1 + dy + grow), min(w, xs.max() + 1 + dx + grow))


def random_case(seed, occlusion=False):
    """GT + predictions exercising crowd, nulls, zero-area frames, duplicates, ties, area
    ranges (GT areas from JSON, scaled or set on the boundaries), >100 and 1/10 predictions
    per (video, category), unknown categories and several videos out of id order."""
    rng = np.random.default_rng(seed)
    sizes = [(24, 32), (150, 120), (260, 300)]
    video_ids = [7, 2, 5, 11][: rng.integers(2, 5)]
    videos = {v: (*sizes[i % 3], int(rng.integers(2, 6))) for i, v in enumerate(video_ids)}
    category_ids = [1, 3, 4]
    labels = ["no_occlusion", "slight_occlusion", "severe_occlusion"]
    gts, next_id = [], 1
    for v, (h, w, frames) in videos.items():
        for _ in range(rng.integers(1, 5)):
            masks = [None if rng.random() < 0.25 else
                     (np.zeros((h, w), bool) if rng.random() < 0.05 else
                      _random_rect_mask(rng, h, w)) for _ in range(frames)]
            areas = [None if m is None else int(m.sum()) for m in masks]
            if rng.random() < 0.3:
                factor = rng.choice([3, 30, 300])
                areas = [None if a is None else int(a * factor) for a in areas]
            elif rng.random() < 0.15:
                boundary = int(rng.choice([128**2, 256**2]))
                areas = [None if a is None else boundary for a in areas]
            track = gt_track(next_id, v, int(rng.choice(category_ids)), masks,
                             iscrowd=int(rng.random() < 0.15), areas=areas)
            if occlusion:
                track["occlusion"] = [labels[rng.integers(0, 3)] if m is not None or t == 0
                                      else None for t, m in enumerate(masks)]
            gts.append(track)
            next_id += 1
            if rng.random() < 0.15:  # an identical duplicate: ties between GTs
                gts.append(dict(track, id=next_id))
                next_id += 1
    score_grid = [0.1, 0.25, 0.5, 0.75, 0.9]
    preds = []
    many_pair = (video_ids[0], int(rng.choice(category_ids)))  # 24x32 video: cheap
    for v, (h, w, frames) in videos.items():
        video_gts = [g for g in gts if g["video_id"] == v]
        for c in category_ids + [9]:  # 9 is not a GT category: dropped
            count = 105 + int(rng.integers(0, 15)) if (v, c) == many_pair else \
                int(rng.choice([0, 1, 2, 5, 12]))
            for _ in range(count):
                same_class = [g for g in video_gts if g["category_id"] == c]
                pool = same_class if same_class and rng.random() < 0.8 else video_gts
                if pool and rng.random() < 0.7:
                    source = pool[rng.integers(0, len(pool))]["masks"]
                    masks = [_jitter(rng, m) for m in source]
                else:
                    masks = [_random_rect_mask(rng, h, w) for _ in range(frames)]
                masks = [None if rng.random() < 0.05 else m for m in masks]
                score = float(rng.choice(score_grid)) if rng.random() < 0.5 else \
                    float(rng.random())
                preds.append(pred(v, c, score, masks))
    order = rng.permutation(len(preds))
    return videos, category_ids, gts, [preds[i] for i in order]


@pytest.mark.parametrize("seed", range(12))
def test_random_sets_match_reference(seed):
    videos, category_ids, gts, preds = random_case(seed)
    ours = check(videos, category_ids, gts, preds, absent=[None, {}, []][seed % 3])
    # The sets are not degenerate: some numbers strictly between 0 and 1.
    assert any(0 < value < 1 for value in ours.values())


@pytest.mark.parametrize("seed", range(100, 104))
def test_random_ovis_sets_match_reference(seed):
    videos, category_ids, gts, preds = random_case(seed, occlusion=True)
    ours = check(videos, category_ids, gts, preds)
    assert set(OCCLUSION_KEYS) <= set(ours)


def test_random_sets_cover_the_quirks():
    """The randomised cases really exercise max-dets, area ranges and crowd tracks."""
    covered = set()
    for seed in range(6):
        videos, category_ids, gts, preds = random_case(seed)
        ours = evaluate_results(gt_json(videos, category_ids, gts), results_json(preds))
        if ours["AR1"] != ours["AR10"] or ours["AR10"] != ours["AR100"]:
            covered.add("max_dets")
        if ours["APm"] > -1 and ours["APl"] > -1 and ours["APs"] > -1:
            covered.add("areas")
        if any(g["iscrowd"] for g in gts):
            covered.add("crowd")
        if any(m is None for g in gts for m in g["masks"]):
            covered.add("null frames")
    assert covered == {"max_dets", "areas", "crowd", "null frames"}


# ============================================================================ bounded results

def test_best_100_per_video_and_category_leave_the_metric_unchanged():
    """The evaluator keeps the best 100 detections per (video, category): results capped
    there (`inference.max_results_per_category`) score exactly as the uncapped ones. The
    one hit of category 1 is the 100th best, tied with the 101st (a miss listed after it):
    a cap of 99 loses it, and so would breaking the tie the other way."""
    from ifc_jax.evaluation.results import best_per_category

    videos = {1: (H, W, 2), 2: (H, W, 2)}
    miss = [rect(H, W, 5, 0, 10, 3), rect(H, W, 0, 6, 4, 10)]
    gts, preds = [], []
    for vid in videos:
        for k, cat in enumerate((1, 2)):
            box = rect(H, W, 2 * k, 2 * k, 2 * k + 4, 2 * k + 5)
            gts.append(gt_track(len(gts) + 1, vid, cat, [box, box]))
            count = 130 if cat == 1 else 40
            # Listed out of score order; rank r (0 = best) scores 0.9 - r / 1000 except that
            # ranks 99 and 100 tie.
            for rank in np.random.default_rng(vid).permutation(count):
                score = 0.9 - min(rank, 99) / 1000 if rank <= 100 else 0.9 - rank / 1000
                hit = rank == (99 if cat == 1 else 5)
                preds.append(pred(vid, cat, score, [box, box] if hit else miss))
    # The tie: the hit must come first among equal scores.
    tied = [i for i, p in enumerate(preds) if p["category_id"] == 1 and
            abs(p["score"] - (0.9 - 99 / 1000)) < 1e-12]
    for vid in videos:
        first, second = [i for i in tied if preds[i]["video_id"] == vid]
        if preds[first]["masks"] is miss:
            preds[first], preds[second] = preds[second], preds[first]
    full = results_json(preds)

    def capped(limit):
        return [entry for vid in videos for entry in
                best_per_category([e for e in full if e["video_id"] == vid], limit)]

    assert len(capped(100)) == 2 * (100 + 40) < len(full)
    gt = gt_json(videos, [1, 2], gts)
    assert evaluate_results(gt, capped(100)) == evaluate_results(gt, full)
    assert evaluate_results(gt, capped(99))["AR100"] < evaluate_results(gt, full)["AR100"]
