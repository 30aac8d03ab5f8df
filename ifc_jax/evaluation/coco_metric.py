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
    return {key: float(value) for key, value in zip(METRIC_KEYS, stats, strict=True)}


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
