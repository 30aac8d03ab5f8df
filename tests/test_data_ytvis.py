"""The YouTube-VIS / OVIS reader on a hand-made file, and its errors for bad input."""

import os

import numpy as np
import pytest

from ifc_jax.data import clips
from ifc_jax.data.frames import load_frame
from ifc_jax.data.ytvis import load_ytvis
from ifc_jax.io import UserError
from tests.data_helpers import (
    clip_settings,
    frame_pattern,
    rectangle_mask,
    write_frames,
    write_json,
)

H, W = 6, 8


def hand_made(tmp_path, **edits):
    """A 3-frame video and a 2-frame video; categories with ids 12, 3, 7 (unsorted)."""
    frames_dir = str(tmp_path / "JPEGImages")
    names_a = write_frames(frames_dir, "vid_a", [frame_pattern(H, W, t) for t in range(3)])
    names_b = write_frames(frames_dir, "vid_b", [frame_pattern(H, W, t) for t in range(2)])
    content = {
        "videos": [
            {"id": 10, "height": H, "width": W, "length": 3, "file_names": names_a},
            {"id": 20, "height": H, "width": W, "length": 2, "file_names": names_b},
        ],
        "categories": [{"id": 12, "name": "cat"}, {"id": 3, "name": "ape"},
                       {"id": 7, "name": "dog"}],
        "annotations": [
            {   # uncompressed RLE, null, polygon (rows 1-2 x cols 2-3, then rows 0-3 x cols 5-7)
                "id": 1, "video_id": 10, "category_id": 7, "iscrowd": 0,
                "segmentations": [{"size": [H, W], "counts": [13, 2, 4, 2, 27]}, None,
                                  [[5, 0, 8, 0, 8, 4, 5, 4]]],
                "areas": [4.0, None, 12.0], "bboxes": [[2, 1, 2, 2], None, [5, 0, 3, 4]],
            },
            {   # a crowd track; "absent" written as [] and {} too
                "id": 2, "video_id": 10, "category_id": 12, "iscrowd": 1,
                "segmentations": [[], {"size": [H, W], "counts": [0, 6, 42]}, {}],
            },
            {   # two polygons in one frame (their union), OVIS-style occlusion levels
                "id": 3, "video_id": 20, "category_id": 3, "iscrowd": 0,
                "segmentations": [[[0, 0, 2, 0, 2, 2, 0, 2], [6, 4, 8, 4, 8, 6, 6, 6]], None],
                "occlusion": ["no_occlusion", None],
            },
        ],
    }
    for key, value in edits.items():
        content[key] = value
    json_path = write_json(str(tmp_path / "train.json"), content)
    return json_path, frames_dir, content


def test_hand_made_file_loads_right(tmp_path):
    json_path, frames_dir, _ = hand_made(tmp_path)
    dataset = load_ytvis(json_path, frames_dir)
    assert dataset.has_annotations
    # Category ids sorted, mapped to contiguous indices and back.
    assert dataset.categories.dataset_ids == (3, 7, 12)
    assert dataset.categories.names == ("ape", "dog", "cat")
    assert [dataset.categories.to_contiguous(i) for i in (3, 7, 12)] == [0, 1, 2]
    assert [dataset.categories.to_dataset_id(i) for i in (0, 1, 2)] == [3, 7, 12]

    video_a, video_b = dataset.videos
    assert (video_a.video_id, video_a.length, video_a.name) == (10, 3, "vid_a")
    track = video_a.tracks[0]
    assert (track.label, track.iscrowd, track.areas[1], track.bboxes[1]) == (1, False, None, None)
    np.testing.assert_array_equal(track.mask(0, H, W), rectangle_mask(H, W, 1, 2, 3, 4))
    assert track.mask(1, H, W) is None
    np.testing.assert_array_equal(track.mask(2, H, W), rectangle_mask(H, W, 0, 5, 4, 8))
    assert track.present_frames().tolist() == [0, 2]

    crowd = video_a.tracks[1]
    assert crowd.iscrowd and crowd.label == 2
    assert crowd.mask(0, H, W) is None and crowd.mask(2, H, W) is None
    np.testing.assert_array_equal(crowd.mask(1, H, W), rectangle_mask(H, W, 0, 0, 6, 1))

    two_polygons = video_b.tracks[0]
    expected = rectangle_mask(H, W, 0, 0, 2, 2) | rectangle_mask(H, W, 4, 6, 6, 8)
    np.testing.assert_array_equal(two_polygons.mask(0, H, W), expected)
    assert two_polygons.occlusion == ("no_occlusion", None)


def test_frames_decode_close_to_what_was_written(tmp_path):
    json_path, frames_dir, _ = hand_made(tmp_path)
    video = load_ytvis(json_path, frames_dir).videos[1]
    frame = load_frame(video, 1).astype(int)
    assert frame.shape == (H, W, 3)
    assert np.abs(frame - frame_pattern(H, W, 1)).max() <= 8  # JPEG quality 100


def test_crowd_tracks_are_not_training_targets(tmp_path):
    json_path, frames_dir, _ = hand_made(tmp_path)
    video = load_ytvis(json_path, frames_dir).videos[0]
    settings = clip_settings(num_frames=3, short_sides=(H,), max_size=100, pad_height=32,
                                  pad_width=32, max_instances=4)
    plan = clips.ClipPlan(np.array([0, 1, 2]), 1, H, False)
    clip = clips.build_train_clip(video, plan, settings)
    assert clip["instance_valid"].tolist() == [True, False, False, False]
    assert clip["track_ids"][0] == 1 and clip["labels"][0] == 1
    assert clip["present"][0].tolist() == [True, False, True]


def test_split_without_annotations_loads_for_inference(tmp_path):
    json_path, frames_dir, content = hand_made(tmp_path)
    del content["annotations"]
    write_json(json_path, content)
    dataset = load_ytvis(json_path, frames_dir)
    assert not dataset.has_annotations
    assert [len(v.tracks) for v in dataset.videos] == [0, 0]
    video = clips.load_eval_video(dataset.videos[0], short_side=12, max_size=100)
    assert video["frames"].shape == (3, 12, 16, 3)
    assert (video["orig_height"], video["orig_width"], video["length"]) == (H, W, 3)
    assert video["file_names"] == ["vid_a/00000.jpg", "vid_a/00001.jpg", "vid_a/00002.jpg"]


def _error(call) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_missing_json(tmp_path):
    message = _error(lambda: load_ytvis(str(tmp_path / "nope.json"), str(tmp_path)))
    assert "nope.json" in message and "not found" in message


def test_malformed_json(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"videos": [ {"id": 1,, }')
    message = _error(lambda: load_ytvis(str(path), str(tmp_path)))
    assert str(path) in message and "malformed JSON" in message and "line 1" in message


def test_missing_frame_file(tmp_path):
    json_path, frames_dir, _ = hand_made(tmp_path)
    missing = os.path.join(frames_dir, "vid_b", "00001.jpg")
    os.remove(missing)
    message = _error(lambda: load_ytvis(json_path, frames_dir))
    assert missing in message and "video 20 (vid_b)" in message and "not found" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_jpeg(tmp_path, damage):
    json_path, frames_dir, _ = hand_made(tmp_path)
    path = os.path.join(frames_dir, "vid_a", "00002.jpg")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(b"this is no jpeg" if damage == "garbage" else data[: len(data) // 2])
    video = load_ytvis(json_path, frames_dir).videos[0]
    message = _error(lambda: load_frame(video, 2, json_path))
    assert path in message and "unreadable JPEG" in message and "video 10 (vid_a)" in message


def test_frame_size_differs_from_annotation(tmp_path):
    json_path, frames_dir, content = hand_made(tmp_path)
    content["videos"][1]["height"] = H + 1
    content["annotations"][2]["segmentations"] = [None, None]
    write_json(json_path, content)
    video = load_ytvis(json_path, frames_dir).videos[1]
    message = _error(lambda: load_frame(video, 0, json_path))
    assert "vid_b/00000.jpg" in message and "annotation says 7x8" in message


def test_mask_size_differs_from_video(tmp_path):
    json_path, frames_dir, content = hand_made(tmp_path)
    content["annotations"][0]["segmentations"][0] = {"size": [H, W + 2], "counts": [60]}
    write_json(json_path, content)
    message = _error(lambda: load_ytvis(json_path, frames_dir))
    assert json_path in message and "video 10 (vid_a)" in message and "frame 0" in message
    assert "mask size 6x10 differs from the video's 6x8" in message


def test_segmentations_length_differs_from_video_length(tmp_path):
    json_path, frames_dir, content = hand_made(tmp_path)
    content["annotations"][2]["segmentations"].append(None)
    write_json(json_path, content)
    message = _error(lambda: load_ytvis(json_path, frames_dir))
    assert json_path in message and "annotation 3 (video 20 (vid_b))" in message
    assert "'segmentations' has 3 entries but the video has 2 frames" in message


def test_unknown_category_id(tmp_path):
    json_path, frames_dir, content = hand_made(tmp_path)
    content["annotations"][1]["category_id"] = 99
    write_json(json_path, content)
    message = _error(lambda: load_ytvis(json_path, frames_dir))
    assert json_path in message and "video 10 (vid_a)" in message
    assert "unknown category_id 99" in message


def test_annotation_of_unknown_video_and_bad_length(tmp_path):
    json_path, frames_dir, content = hand_made(tmp_path)
    content["annotations"][0]["video_id"] = 30
    write_json(json_path, content)
    assert "video_id 30 is not in 'videos'" in _error(lambda: load_ytvis(json_path, frames_dir))
    json_path, frames_dir, content = hand_made(tmp_path)
    content["videos"][0]["length"] = 4
    write_json(json_path, content)
    assert "'length' is 4 but 'file_names' lists 3" in _error(
        lambda: load_ytvis(json_path, frames_dir))
