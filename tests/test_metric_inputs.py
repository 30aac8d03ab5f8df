"""The metric's loaders: one clear error (naming the file) per kind of bad input."""

from __future__ import annotations

import copy
import json
import os
import threading

import numpy as np
import pytest

from ifc_jax.evaluation.ytvis_metric import (
    evaluate_results,
    load_ground_truth,
    load_results,
)
from ifc_jax.io import UserError
from tests.test_metric import compressed_rle, gt_json, gt_track, pred, rect, results_json

H, W = 8, 12


def small_case():
    masks = [rect(H, W, 0, 0, 3, 3), None, rect(H, W, 2, 2, 5, 6)]
    gt = gt_json({4: (H, W, 3)}, [1, 2], [gt_track(1, 4, 1, masks)])
    results = results_json([pred(4, 1, 0.8, masks)])
    return gt, results


def error_of(gt, results) -> str:
    with pytest.raises(UserError) as info:
        evaluate_results(gt, results, gt_source="gt.json", results_source="res.json")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_small_case_is_valid():
    gt, results = small_case()
    # Precision is TP / (TP + FP + 2.2e-16) upstream, so a perfect score is 1 - 2.2e-16.
    assert evaluate_results(gt, results)["AP"] == pytest.approx(1.0, abs=1e-12)


def test_results_for_other_videos():
    gt, results = small_case()
    results[0]["video_id"] = 99
    message = error_of(gt, results)
    assert message.startswith("res.json:") and "video_id 99" in message
    assert "gt.json" in message and "different videos" in message


def test_results_with_wrong_frame_count():
    gt, results = small_case()
    results[0]["segmentations"] = results[0]["segmentations"][:2]
    message = error_of(gt, results)
    assert message.startswith("res.json:")
    assert "2 segmentations" in message and "3 frames" in message and "video 4" in message


def test_results_must_be_compressed_rle_of_the_video_size():
    gt, results = small_case()
    bad = copy.deepcopy(results)
    bad[0]["segmentations"][0] = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]
    assert "compressed RLE" in error_of(gt, bad)
    bad = copy.deepcopy(results)
    bad[0]["segmentations"][2] = compressed_rle(np.zeros((H + 1, W), bool))
    assert "9x12 differs from the video's 8x12" in error_of(gt, bad)
    bad = copy.deepcopy(results)
    too_many = compressed_rle(np.ones((100, 100), bool))["counts"]  # 10,000 pixels
    bad[0]["segmentations"][2] = {"size": [H, W], "counts": too_many}
    assert "frame 2: RLE counts sum to 10000, not 8x12 = 96" in error_of(gt, bad)
    # Too few pixels: pycocotools' IoU would loop forever on it.
    bad[0]["segmentations"][2] = compressed_rle(np.ones((4, W), bool)) | {"size": [H, W]}
    assert "frame 2: RLE counts sum to 48, not 8x12 = 96" in error_of(gt, bad)
    bad[0]["segmentations"][2] = {"size": [H, W], "counts": "0O"}  # runs 0, -1
    assert "frame 2: RLE counts must not be negative" in error_of(gt, bad)


@pytest.mark.parametrize("counts,needle", [
    ("zzzz", "characters '0'..'o'"),  # characters past 'o'
    (compressed_rle(rect(H, W, 0, 0, 3, 3))["counts"] + "\u00e9",  # non-ASCII (UTF-8 bytes)
     "characters '0'..'o'"),
    ("0o", "end in the middle of a number"),  # pycocotools would read past the end
    (b"0\xff1", "characters '0'..'o'"),
])
def test_malformed_counts_strings_are_refused_before_pycocotools(counts, needle):
    # pycocotools' decoder reads such strings out of bounds (crashes and hangs were seen).
    gt, results = small_case()
    results[0]["segmentations"][2] = {"size": [H, W], "counts": counts}
    message = error_of(gt, results)
    assert message.startswith("res.json: ") and "frame 2: compressed RLE counts " in message
    assert needle in message


@pytest.mark.parametrize("field,value,needle", [
    ("score", float("nan"), "'score'"),
    ("score", "0.5", "'score'"),
    ("category_id", 1.5, "'category_id'"),
    ("video_id", None, "'video_id'"),
    ("segmentations", None, "no segmentations"),
])
def test_results_entry_fields(field, value, needle):
    gt, results = small_case()
    results[0][field] = value
    message = error_of(gt, results)
    assert message.startswith("res.json: entry 0") and needle in message


def test_results_must_be_a_list():
    gt, _ = small_case()
    assert "expected a JSON list" in error_of(gt, {"annotations": []})


@pytest.mark.parametrize("mutate,needle", [
    (lambda gt: gt.pop("videos"), "'videos'"),
    (lambda gt: gt["annotations"].append(dict(gt["annotations"][0])), "appears twice"),
    (lambda gt: gt["annotations"][0]["segmentations"].pop(), "has 2 segmentations"),
    (lambda gt: gt["annotations"][0].update(areas="big"), "'areas'"),
    (lambda gt: gt["videos"][0].update(height=0), "height"),
])
def test_bad_ground_truth(mutate, needle):
    gt, results = small_case()
    mutate(gt)
    message = error_of(gt, results)
    assert message.startswith("gt.json:") and needle in message


def test_annotations_of_unlisted_videos_or_categories_are_ignored():
    # As upstream (it selects annotations by the listed video and category ids): editing
    # the lists is how a subset is evaluated. Their frames are not even checked.
    gt, results = small_case()
    expected = evaluate_results(gt, results)
    extra = dict(gt["annotations"][0], segmentations=[None])
    gt["annotations"] += [dict(extra, id=5, video_id=5), dict(extra, id=6, category_id=9)]
    assert evaluate_results(gt, results) == expected


def test_partial_occlusion_labels_are_an_error():
    gt, results = small_case()
    gt["annotations"].append(dict(gt["annotations"][0], id=2,
                                  occlusion=["no_occlusion", None, "severe_occlusion"]))
    message = error_of(gt, results)
    assert "annotation id 1" in message and "occlusion" in message
    gt["annotations"][0]["occlusion"] = ["very_occluded", None, None]
    assert "occlusion" in error_of(gt, results)


def test_missing_gt_areas_fall_back_to_mask_areas():
    gt, results = small_case()
    expected = evaluate_results(gt, results)
    del gt["annotations"][0]["areas"]
    assert evaluate_results(gt, results) == expected


def test_inputs_are_not_modified():
    gt, results = small_case()
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    evaluate_results(gt, results)
    assert gt == gt_before and results == results_before


def test_files_missing_or_malformed(tmp_path):
    gt, results = small_case()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    parsed = load_ground_truth(str(gt_path))
    bad = tmp_path / "results.json"
    bad.write_text('[{"video_id": 4, "score": 0.5,')
    with pytest.raises(UserError, match=r"results\.json: malformed JSON in results file "
                                        r"\(line 1 column"):
        load_results(str(bad), parsed)
    bad.write_bytes(b'["\x80"]')
    with pytest.raises(UserError, match="not UTF-8"):
        load_results(str(bad), parsed)
    with pytest.raises(UserError, match="nope.json: ground-truth file not found"):
        load_ground_truth(str(tmp_path / "nope.json"))
    with pytest.raises(UserError, match="is a folder"):
        load_ground_truth(str(tmp_path))
    if os.path.exists("/dev/zero"):  # endless: reading it whole would fill the memory
        with pytest.raises(UserError, match="/dev/zero: is a device, expected a results"):
            load_results("/dev/zero", parsed)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(results))
    assert len(load_results(str(good), parsed)) == 1
    fifo = tmp_path / "pipe.json"  # a pipe is read as a file (as `<(cat file)` gives)
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(json.dumps(results),))
    writer.start()
    assert len(load_results(str(fifo), parsed)) == 1
    writer.join()
