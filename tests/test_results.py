"""results.json: entries per (track, class), RLE per frame, ids mapped back, atomic writes,
and the whole tracker -> masks -> results -> metric path on a synthetic video."""

from __future__ import annotations

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

from ifc_jax.data.masks import empty_rle, encode_rle
from ifc_jax.evaluation.results import video_results as results_of_video
from ifc_jax.evaluation.results import write_results_json
from ifc_jax.evaluation.ytvis_metric import evaluate_results
from ifc_jax.inference.tracking import (
    ClipTracker,
    StrideEightUpsampler,
    TrackMasks,
    keep_object_queries,
)

# configs/base.py's inference options, as video_results takes them.
BASE_OPTIONS = dict(class_threshold=0.01, multi_class=True, drop_empty=False, min_pixels=0)


def video_results(*args, **options):
    return results_of_video(*args, **{**BASE_OPTIONS, **options})


def decode(rle):
    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_rle_round_trip_and_format():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 11)) > 0.6
    rle = encode_rle(mask)
    assert rle["size"] == [7, 11] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode(rle), mask)
    assert not decode(empty_rle(5, 3)).any() and empty_rle(5, 3)["size"] == [5, 3]
    with pytest.raises(ValueError):
        encode_rle(np.zeros((2, 3, 4), bool))


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (31, 1), (720, 1280), (2160, 3840)])
def test_empty_rle_is_pycocotools_encoding_of_a_zero_mask(size):
    zeros = np.zeros(size, np.uint8, order="F")
    expected = mask_util.encode(zeros)
    rle = empty_rle(*size)
    assert rle == {"size": list(size), "counts": expected["counts"].decode("utf-8")}


def test_track_masks_fill_missing_frames_with_empty_rle():
    store = TrackMasks(num_frames=4, height=6, width=5)
    mask = np.zeros((6, 5), bool)
    mask[1:3, 2:4] = True
    store.add(7, 2, mask)
    segmentations = store.segmentations(7)
    assert len(segmentations) == 4
    assert [int(decode(s).sum()) for s in segmentations] == [0, 0, 4, 0]
    assert len(store.segmentations(99)) == 4  # a track with no frame: all empty
    with pytest.raises(ValueError):
        store.add(7, 4, mask)
    with pytest.raises(ValueError):
        store.add(7, 0, np.zeros((5, 6), bool))


def test_multi_class_entries_and_category_mapping():
    segs_a, segs_b = [empty_rle(2, 2)], [encode_rle(np.ones((2, 2), bool))]
    # K = 3 real classes mapped to dataset ids 3, 7, 42; last entry = no object.
    probs_a = np.array([0.5, 0.02, 0.01, 0.47])  # 0.01 is not > 0.01: excluded
    probs_b = np.array([0.005, 0.9, 0.03, 0.065])
    entries = video_results(11, [probs_a, probs_b], [segs_a, segs_b], [3, 7, 42])
    assert [(e["category_id"], e["score"]) for e in entries] == [
        (3, 0.5), (7, 0.02), (7, 0.9), (42, 0.03)]
    assert all(e["video_id"] == 11 for e in entries)
    assert entries[0]["segmentations"] is segs_a and entries[2]["segmentations"] is segs_b
    assert set(entries[0]) == {"video_id", "score", "category_id", "segmentations"}
    assert all(type(e["score"]) is float and type(e["category_id"]) is int for e in entries)


def test_single_class_mode_takes_the_argmax_real_class():
    probs = [np.array([0.1, 0.3, 0.2, 0.4]), np.array([0.001, 0.002, 0.0005, 0.9965])]
    entries = video_results(1, probs, [[], []], [1, 2, 3], multi_class=False)
    # The no-object probability never wins; one entry per track whatever its score.
    assert [(e["category_id"], e["score"]) for e in entries] == [(2, 0.3), (2, 0.002)]


def test_drop_empty_leaves_out_tracks_empty_in_every_frame():
    one_pixel = np.zeros((3, 4), bool)
    one_pixel[2, 3] = True
    empty_track = [empty_rle(3, 4)] * 3
    late_track = [empty_rle(3, 4), empty_rle(3, 4), encode_rle(one_pixel)]
    probs = [np.array([0.9, 0.1]), np.array([0.6, 0.4])]
    kept = video_results(2, probs, [empty_track, late_track], [5], drop_empty=True)
    assert [e["score"] for e in kept] == [0.6]  # a single pixel in the last frame counts
    # Off (the original's behaviour): both tracks are written.
    assert [e["score"] for e in video_results(2, probs, [empty_track, late_track], [5])] == [
        0.9, 0.6]


def test_min_pixels_leaves_out_tracks_under_that_many_pixels_in_all_frames():
    from ifc_jax.config import load_config
    from ifc_jax.evaluation.results import result_options

    def block(rows):  # the first `rows` rows of a 4x4 frame
        mask = np.zeros((4, 4), bool)
        mask[:rows] = True
        return encode_rle(mask)

    speck = [block(1), empty_rle(4, 4)]  # 4 pixels
    small = [block(1), block(1)]  # 8 pixels over two frames
    probs = [np.array([0.9, 0.1]), np.array([0.6, 0.4])]
    kept = video_results(2, probs, [speck, small], [5], min_pixels=8)
    assert [e["score"] for e in kept] == [0.6]
    assert len(video_results(2, probs, [speck, small], [5], min_pixels=4)) == 2
    inference = load_config("toy").inference
    assert result_options(inference) == dict(class_threshold=0.01, multi_class=True,
                                             drop_empty=True, min_pixels=64,
                                             max_per_category=100)


def test_write_results_json_is_atomic(tmp_path):
    path = tmp_path / "sub" / "results.json"
    entries = video_results(1, [np.array([0.7, 0.3])], [[empty_rle(3, 3)]], [5])
    write_results_json(str(path), entries)
    assert json.loads(path.read_text()) == entries
    # A failing write leaves the previous file whole and no temp file behind.
    bad = [dict(entries[0], score=float("nan"))]
    with pytest.raises(ValueError):
        write_results_json(str(path), bad)
    assert json.loads(path.read_text()) == entries
    assert os.listdir(path.parent) == ["results.json"]


def test_tracker_to_results_to_metric_end_to_end(tmp_path):
    # A 12-frame video, 96x128 originally, fed to the "model" at 48x64 padded to 56x72: the
    # stride-8 grid is 7x9 of which 6x8 cells are the frame. Two objects of 2x2 cells move
    # one cell per 3 frames; logits are +6 / -6 inside / outside, identical in every window,
    # so each frame's mask must be jax.image.resize (bilinear, no antialias) of the valid
    # 6x8 cells to 96x128, thresholded at 0; scored against those masks as GT, AP is 1.
    import jax
    import jax.numpy as jnp

    num_frames, orig, resized, padded_grid = 12, (96, 128), (48, 64), (7, 9)
    rng = np.random.default_rng(3)

    def object_cells(index, t):
        y, x = (1, t // 3) if index == 0 else (4, 6 - t // 3)
        return y, x

    def grid_mask(index, t):
        mask = np.zeros(padded_grid, bool)
        y, x = object_cells(index, t)
        mask[y:y + 2, x:x + 2] = True
        return mask

    def expected_mask(index, t):
        valid_logits = np.where(grid_mask(index, t), 6.0, -6.0)[:6, :8]
        upsampled = jax.image.resize(jnp.asarray(valid_logits, jnp.float32), orig, "bilinear",
                                     antialias=False)
        return np.asarray(upsampled) > 0

    upsampler = StrideEightUpsampler(resized, orig)
    store = TrackMasks(num_frames, *orig)
    tracker = ClipTracker(num_frames, 0.05, lambda track, t, logits: store.add(
        track, t, upsampler(logits)), valid_size=upsampler.valid_size)
    labels = (0, 1)  # contiguous classes; dataset ids 10 and 20
    for start in range(0, num_frames - 4):
        logits = np.stack([np.stack([np.where(grid_mask(o, t), 6.0, -6.0)
                                     for t in range(start, start + 5)]) for o in (0, 1)])
        logits[:, :, 6:, :] = 50.0  # the padding row and column must not leak
        logits[:, :, :, 8:] = 50.0
        probs = np.full((3, 3), 0.005)
        probs[0, labels[0]] = probs[1, labels[1]] = 0.9
        probs[2, 2] = 0.9  # a no-object query, dropped
        mask_logits = np.concatenate([logits, rng.normal(0, 1, (1, 5, *padded_grid))])
        tracker.add_window(start, *keep_object_queries(probs, mask_logits))
    tracks = tracker.finish()
    assert len(tracks) == 2
    entries = video_results(5, [t.class_probs for t in tracks],
                            [store.segmentations(t.track_id) for t in tracks], [10, 20])
    assert [e["category_id"] for e in entries] == [10, 20]
    for entry, index in zip(entries, (0, 1), strict=True):
        assert len(entry["segmentations"]) == num_frames
        for t, rle in enumerate(entry["segmentations"]):
            np.testing.assert_array_equal(decode(rle), expected_mask(index, t))
    path = tmp_path / "results.json"
    write_results_json(str(path), entries)

    gt = {"videos": [{"id": 5, "height": orig[0], "width": orig[1],
                      "file_names": [f"{t}.jpg" for t in range(num_frames)]}],
          "categories": [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}],
          "annotations": []}
    for index, category in ((0, 10), (1, 20)):
        masks = [expected_mask(index, t) for t in range(num_frames)]
        gt["annotations"].append({"id": index + 1, "video_id": 5, "category_id": category,
                                  "iscrowd": 0,
                                  "segmentations": [encode_rle(m) for m in masks],
                                  "areas": [int(m.sum()) for m in masks]})
    metrics = evaluate_results(gt, json.loads(path.read_text()))
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AR1"] == pytest.approx(1.0, abs=1e-12)
