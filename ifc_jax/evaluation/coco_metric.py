"""COCO mask AP of image results, by pycocotools' COCOeval (the COCO API's own evaluator).

A COCO split is predicted as one-frame videos (data/coco.py), so its results come out as
results.json entries of videos; `coco_detections` turns them into COCO's detection format

    {"image_id": int, "category_id": int, "segmentation": {"size": [H, W], "counts": str},
     "score": float}

(what the COCO test-dev server takes), and `evaluate_coco` scores them with COCOeval
(iouType "segm", maxDets 1 / 10 / 100 per image and category). Crowd ground truth is an
ignore region there, as in the official evaluation.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np

from ifc_jax.evaluation.ytvis_metric import METRIC_KEYS
from ifc_jax.io import UserError

log = logging.getLogger("ifc_jax.evaluate")


def coco_detections(video_results: list[dict]) -> list[dict]:
    """COCO detections of results.json entries of one-frame videos (video id = image id)."""
    detections = []
    for entry in video_results:
        if len(entry["segmentations"]) != 1:
            raise ValueError(f"video {entry['video_id']}: a COCO image result needs one mask, "
                             f"got {len(entry['segmentations'])}")
        detections.append({"image_id": entry["video_id"], "category_id": entry["category_id"],
                           "segmentation": entry["segmentations"][0], "score": entry["score"]})
    return detections


def evaluate_coco(ground_truth: dict, detections: list[dict], *,
                  gt_source: str = "ground truth") -> dict[str, float]:
    """COCOeval's 12 segm metrics (METRIC_KEYS order: AP, AP50, AP75, APs, APm, APl, AR1,
    AR10, AR100, ARs, ARm, ARl) as fractions, -1 where undefined. COCOeval's printed table
    goes to the debug log."""
    return score_coco(ground_truth, detections, gt_source=gt_source)[0]


def score_coco(ground_truth: dict, detections: list[dict], *,
               gt_source: str = "ground truth") -> tuple[dict[str, float], dict[int, float]]:
    """(the `evaluate_coco` metrics, {category id: AP}) where a category's AP is COCOeval's
    precision averaged over IoU 0.50:0.95 and recall, area all, 100 detections (-1 for a
    category without ground truth); the summary AP is their mean over the others."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            gt = COCO()
            gt.dataset = _ground_truth_for_eval(ground_truth)
            gt.createIndex()
            if detections:
                dt = gt.loadRes([dict(d) for d in detections])
            else:  # loadRes cannot take an empty list
                dt = COCO()
                dt.dataset = {"images": gt.dataset["images"],
                              "categories": gt.dataset["categories"], "annotations": []}
                dt.createIndex()
            evaluator = COCOeval(gt, dt, iouType="segm")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    except (KeyError, TypeError, ValueError, AssertionError, IndexError) as err:
        raise UserError(f"{gt_source}: COCOeval could not score the results "
                        f"({type(err).__name__}: {err})") from None
    log.debug("COCOeval:\n%s", printed.getvalue())
    stats = np.asarray(evaluator.stats, np.float64)
    metrics = {key: float(value) for key, value in zip(METRIC_KEYS, stats, strict=True)}
    precision = evaluator.eval["precision"]  # (IoU, recall, category, area, max dets)
    per_category = {}
    for index, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        per_category[int(category_id)] = float(values.mean()) if values.size else -1.0
    return metrics, per_category


def check_detections(detections: Any, source: str) -> list[dict]:
    """The detections of a COCO results file, checked: a list of objects with image_id,
    category_id, segmentation and score. UserError naming `source` otherwise."""
    needed = {"image_id", "category_id", "segmentation", "score"}
    if not isinstance(detections, list):
        raise UserError(f"{source}: expected a list of COCO detections "
                        "{image_id, category_id, segmentation, score}")
    for position, detection in enumerate(detections):
        if not isinstance(detection, dict) or not needed <= set(detection):
            missing = sorted(needed - set(detection)) if isinstance(detection, dict) else needed
            raise UserError(f"{source}: detection {position} has no {', '.join(missing)} "
                            "(a COCO detection: image_id, category_id, segmentation, score)")
    return detections


def _ground_truth_for_eval(content: dict) -> dict:
    """The COCO ground truth as COCOeval needs it: every annotation with an `iscrowd` flag and
    an `area` (computed from the mask where the file has none), none of them modified."""
    from pycocotools import mask as mask_util

    from ifc_jax.data.masks import to_compressed_rle

    heights = {image["id"]: (image["height"], image["width"]) for image in content["images"]}
    annotations = []
    for position, annotation in enumerate(content.get("annotations") or []):
        annotation = dict(annotation)
        annotation.setdefault("id", position + 1)
        annotation.setdefault("iscrowd", 0)
        if "area" not in annotation:
            rle = to_compressed_rle(annotation["segmentation"],
                                    *heights[annotation["image_id"]])
            annotation["area"] = float(mask_util.area(rle))
        annotations.append(annotation)
    return {**content, "annotations": annotations}
