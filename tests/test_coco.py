"""COCO pre-training data: the reader decodes masks as pycocotools' COCO API does, the random
crop of the clips, and COCO mask AP through COCOeval on hand-computed cases."""

import copy
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from ifc_jax.data import clips, coco, frames
from ifc_jax.evaluation.coco_metric import coco_detections, evaluate_coco
from ifc_jax.io import UserError
from tests.data_helpers import clip_settings, frame_pattern, rectangle_mask, write_json

H, W = 40, 56


def _polygon(top, left, bottom, right):
    return [float(v) for v in (left, top, right, top, right, bottom, left, bottom)]


def _uncompressed(mask):
    """COCO's crowd encoding: column-major run lengths starting with zeros."""
    flat = np.asarray(mask, np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def _compressed(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def hand_built_coco():
    """Two images; categories with gaps in their ids; a two-part polygon, a triangle, a
    compressed RLE and an uncompressed-RLE crowd region."""
    triangle = [[5.0, 3.0, 30.5, 8.0, 12.0, 25.5]]
    return {
        "images": [{"id": 7, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": 9, "file_name": "b.jpg", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                       {"id": 90, "name": "toothbrush"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 90, "iscrowd": 0,
             "segmentation": [_polygon(2, 3, 10, 12), _polygon(20, 30, 31.5, 50)]},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": triangle},
            {"id": 3, "image_id": 9, "category_id": 3, "iscrowd": 0,
             "segmentation": _compressed(rectangle_mask(H, W, 4, 6, 22, 40))},
            {"id": 4, "image_id": 9, "category_id": 1, "iscrowd": 1,
             "segmentation": _uncompressed(rectangle_mask(H, W, 25, 0, 40, 30))},
        ],
    }


@pytest.fixture
def coco_files(tmp_path):
    content = hand_built_coco()
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(frame_pattern(H, W, 0)).save(str(tmp_path / name), quality=100)
    return write_json(str(tmp_path / "instances.json"), content), str(tmp_path)


def test_masks_and_areas_agree_with_pycocotools(coco_files):
    json_path, images = coco_files
    dataset = coco.load_coco(json_path, images)
    api = COCO(json_path)
    assert dataset.annotation_format == "coco" and dataset.has_annotations
    assert [v.video_id for v in dataset.videos] == [7, 9]
    assert all(v.length == 1 for v in dataset.videos)
    assert dataset.categories.dataset_ids == (1, 3, 90)
    tracks = {t.track_id: t for v in dataset.videos for t in v.tracks}
    assert sorted(tracks) == [1, 2, 3, 4]
    for annotation in api.loadAnns(api.getAnnIds()):
        track = tracks[annotation["id"]]
        ours = track.mask(0, H, W)
        expected = api.annToMask(annotation).astype(bool)
        np.testing.assert_array_equal(ours, expected)
        assert ours.sum() == mask_util.area(api.annToRLE(annotation)) > 0
        assert track.iscrowd == bool(annotation["iscrowd"])
        assert track.label == {1: 0, 3: 1, 90: 2}[annotation["category_id"]]


def test_crowd_regions_are_no_training_target(coco_files):
    json_path, images = coco_files
    video = coco.load_coco(json_path, images).videos[1]  # a car and a crowd of persons
    settings = clip_settings(num_frames=1, short_sides=(H,), max_size=1000, flip_prob=0.0,
                             pad_height=64, pad_width=64, max_instances=4)
    plan = clips.plan_clip(np.random.default_rng(0), 1, settings, (H, W))
    clip = clips.build_train_clip(video, plan, settings)
    assert clip["instance_valid"].tolist() == [True, False, False, False]
    assert clip["track_ids"][0] == 3 and clip["labels"][0] == 1


def test_random_crop_cuts_frames_and_masks_before_the_resize(coco_files):
    json_path, images = coco_files
    video = coco.load_coco(json_path, images).videos[0]
    settings = clip_settings(num_frames=1, short_sides=(48,), max_size=1000, flip_prob=0.0,
                             pad_height=96, pad_width=96, max_instances=4, crop_range=(20, 30))
    seen = set()
    for seed in range(40):
        plan = clips.plan_clip(np.random.default_rng(seed), 1, settings, (H, W))
        top, left, height, width = plan.crop
        assert 20 <= height <= 30 and 20 <= width <= 30
        assert 0 <= top <= H - height and 0 <= left <= W - width
        seen.add((height, width))
        clip = clips.build_train_clip(video, plan, settings)
        out_h, out_w = clip["image_size"]
        assert min(out_h, out_w) == 48
        image = frames.load_frame(video, 0)[top:top + height, left:left + width]
        np.testing.assert_array_equal(clip["frames"][0, :out_h, :out_w],
                                      frames.resize_frame(image, out_h, out_w))
        for slot in np.flatnonzero(clip["instance_valid"]):
            track = next(t for t in video.tracks if t.track_id == clip["track_ids"][slot])
            cropped = track.mask(0, H, W)[top:top + height, left:left + width]
            expected = np.zeros((96, 96), bool)
            expected[:out_h, :out_w] = frames.resize_mask(cropped, out_h, out_w)
            np.testing.assert_array_equal(clip["target_counts"][slot, 0],
                                          clips.stride4_counts(expected))
    assert len(seen) > 10  # sides drawn over the whole range
    # A side shorter than the range's low end is kept whole.
    assert clips.sample_crop(np.random.default_rng(0), 10, 50, 20, 30)[::2] == (0, 10)


@pytest.mark.parametrize("change,message", [
    (lambda c: c["annotations"][0].update(category_id=5), "unknown category_id 5"),
    (lambda c: c["annotations"][1].update(image_id=8), "image_id 8 is not in 'images'"),
    (lambda c: c["images"][0].pop("height"), "has no 'height'"),
    (lambda c: c["annotations"][2]["segmentation"].update(size=[H, W + 1]), "differs"),
    (lambda c: c["images"].append(dict(c["images"][0])), "appears twice"),
])
def test_bad_files_are_one_error_naming_the_file(tmp_path, change, message):
    content = copy.deepcopy(hand_built_coco())
    change(content)
    path = write_json(str(tmp_path / "bad.json"), content)
    with pytest.raises(UserError, match=message) as caught:
        coco.load_coco(path, str(tmp_path), check_files=False)
    assert str(tmp_path / "bad.json") in str(caught.value)


def test_a_missing_image_file_is_named(coco_files):
    json_path, images = coco_files
    os.remove(os.path.join(images, "b.jpg"))
    with pytest.raises(UserError, match="b.jpg: frame file not found"):
        coco.load_coco(json_path, images)


def _detection(image_id, category_id, mask, score):
    return {"video_id": image_id, "category_id": category_id, "score": score,
            "segmentations": [_compressed(mask)]}


def test_coco_ap_on_hand_computed_cases():
    content = hand_built_coco()
    car = rectangle_mask(H, W, 4, 6, 22, 40)
    crowd = rectangle_mask(H, W, 25, 0, 40, 30)
    gt = COCO()
    gt.dataset = copy.deepcopy(content)
    gt.createIndex()
    masks = {a["id"]: gt.annToMask(a).astype(bool) for a in content["annotations"]}
    # Every non-crowd object found exactly: AP 1 (each category's precision is 1 at every
    # recall); persons in the crowd region are ignored, not false positives.
    perfect = [_detection(7, 90, masks[1], 0.9), _detection(7, 1, masks[2], 0.8),
               _detection(9, 3, car, 0.7), _detection(9, 1, crowd, 0.95)]
    metrics = evaluate_coco(content, coco_detections(perfect))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(1.0)
    # The car missed and a false car ranked first elsewhere: the car category has no true
    # positive (AP 0); the other two stay at 1, so AP = 2/3 at every IoU threshold.
    missed = [perfect[0], perfect[1], _detection(7, 3, masks[1], 0.99)]
    metrics = evaluate_coco(content, coco_detections(missed))
    assert metrics["AP"] == pytest.approx(2 / 3)
    # Two true persons... one category with its only object found at rank 2 behind a false
    # positive: precision 1/2 at recall 1, so person AP = 0.5 and AP = (1 + 1 + 0.5) / 3.
    ranked = [perfect[0], _detection(7, 1, masks[1] & ~masks[2], 0.85), perfect[1], perfect[2]]
    metrics = evaluate_coco(content, coco_detections(ranked))
    assert metrics["AP"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert evaluate_coco(content, [])["AP"] == 0.0
    with pytest.raises(ValueError, match="one mask"):
        coco_detections([{**perfect[0], "segmentations": [_compressed(car)] * 2}])


def test_toy_coco_files_follow_the_video_files(tmp_path):
    from ifc_jax.data import toy

    root = toy.generate_toy_dataset(str(tmp_path / "toy"), num_train=3, num_val=2, height=48,
                                    width=64, min_frames=5, max_frames=9,
                                    mask_encoding="mixed")
    toy.write_toy_coco(root)
    for split in toy.SPLITS:
        videos = json.loads((tmp_path / "toy" / f"{split}.json").read_text())
        dataset = coco.load_coco(os.path.join(root, toy.coco_json(split)), root)
        expected_images = sum(len(range(0, v["length"], toy.COCO_FRAME_STEP))
                              for v in videos["videos"])
        assert len(dataset.videos) == expected_images
        by_file = {v.file_names[0]: v for v in dataset.videos}
        for video in videos["videos"]:
            for frame in range(0, video["length"], toy.COCO_FRAME_STEP):
                image = by_file[f"{split}/JPEGImages/{video['file_names'][frame]}"]
                tracks = [t for t in videos["annotations"] if t["video_id"] == video["id"]
                          and t["segmentations"][frame] is not None]
                assert len(image.tracks) == len(tracks)


def test_score_takes_a_coco_file_and_its_detections(tmp_path, capsys):
    from ifc_jax import cli

    content = hand_built_coco()
    gt_path = write_json(str(tmp_path / "gt.json"), content)
    gt = COCO(gt_path)
    masks = {a["id"]: gt.annToMask(a).astype(bool) for a in content["annotations"]}
    found = coco_detections([_detection(7, 90, masks[1], 0.9), _detection(7, 1, masks[2], 0.8),
                             _detection(7, 77, masks[2], 0.5)])  # 77: no such category
    results = write_json(str(tmp_path / "detections.json"), found)
    capsys.readouterr()  # pycocotools' own messages above
    assert cli.main(["score", "--gt", gt_path, "--results", results, "--json",
                     "--per-category"]) == 0
    scored = json.loads(capsys.readouterr().out)
    # toothbrush and person found, the car missed: AP (1 + 1 + 0) / 3; the car's AP is 0.
    assert scored["AP"] == pytest.approx(2 / 3)
    assert {c["id"]: c["AP"] for c in scored["per_category"]} == pytest.approx(
        {1: 1.0, 3: 0.0, 90: 1.0})
    write_json(str(tmp_path / "bad.json"), [{"image_id": 7, "score": 1.0}])
    assert cli.main(["score", "--gt", gt_path, "--results", str(tmp_path / "bad.json")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "bad.json" in error[0]
    assert "category_id, segmentation" in error[0]
