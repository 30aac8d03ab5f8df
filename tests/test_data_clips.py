"""Clip sampling, resize geometry and target building (numpy; checked against hand values)."""

from fractions import Fraction

import numpy as np
import pytest

from ifc_jax.data import clips
from ifc_jax.data import masks as mask_codec
from ifc_jax.data.frames import nearest_source_indices, resize_mask
from ifc_jax.data.ytvis import Track, Video
from tests.data_helpers import clip_settings, frame_pattern, rectangle_mask


@pytest.mark.parametrize("length, frame_range", [(1, 20), (2, 20), (3, 20), (7, 2), (60, 20),
                                                  (60, 0)])
def test_sampled_frames_obey_the_rules(length, frame_range):
    rng = np.random.default_rng(length)
    for _ in range(300):
        indices, reference = clips.sample_frame_indices(rng, length, 5, frame_range)
        assert indices.shape == (5,)
        assert np.all(np.diff(indices) >= 0), "sorted"
        assert indices.min() >= 0 and indices.max() < length
        assert np.all(np.abs(indices - reference) <= frame_range)
        if length == 1 or frame_range == 0:
            assert np.all(indices == reference), "no other frame: the reference repeats"
        else:
            assert np.sum(indices == reference) == 1, "the others exclude the reference"


def test_sampling_is_uniform_and_with_replacement():
    rng = np.random.default_rng(0)
    references, others = [], []
    for _ in range(4000):
        indices, reference = clips.sample_frame_indices(rng, 4, 5, 20)
        references.append(reference)
        others.extend(i for i in indices.tolist() if i != reference)
    # Reference uniform over 4 frames: expected 1000 each (std ~27).
    assert np.all(np.abs(np.bincount(references, minlength=4) - 1000) < 150)
    # 4 others drawn from 3 candidate frames: duplicates are certain (pigeonhole), and every
    # candidate frame is drawn equally often overall.
    assert len(others) == 4 * 4000
    assert np.all(np.abs(np.bincount(others, minlength=4) - 4000) < 300)


def test_short_side_and_flip_are_drawn_per_clip():
    settings = clip_settings(short_sides=(360, 480), flip_prob=0.5)
    plans = [clips.plan_clip(np.random.default_rng(seed), 30, settings) for seed in range(400)]
    assert {p.short_side for p in plans} == {360, 480}
    assert 140 < sum(p.flip for p in plans) < 260
    again = clips.plan_clip(np.random.default_rng(7), 30, settings)
    assert again.frame_indices.tolist() == plans[7].frame_indices.tolist()
    assert (again.short_side, again.flip) == (plans[7].short_side, plans[7].flip)


@pytest.mark.parametrize("size, short, max_size, expected", [
    ((720, 1280), 360, 1333, (360, 640)),
    ((720, 1280), 480, 1333, (480, 853)),   # 853.33 -> 853
    ((1080, 1920), 480, 1333, (480, 853)),
    ((1280, 720), 480, 1333, (853, 480)),   # portrait
    ((480, 640), 360, 1333, (360, 480)),
    ((100, 1000), 480, 1333, (133, 1333)),  # 4800 > 1333: scale 1.333 -> 133.3 x 1333
    ((96, 144), 64, 128, (64, 96)),
    ((96, 144), 100, 128, (85, 128)),        # 150 > 128: 100 * 128/150 = 85.33
    ((3, 3), 5, 100, (5, 5)),
])
def test_shortest_edge_size_matches_detectron2_by_hand(size, short, max_size, expected):
    assert clips.shortest_edge_size(*size, short, max_size) == expected


def test_clips_larger_than_the_pad_box_are_scaled_to_fit():
    settings = clip_settings(pad_height=480, pad_width=864)
    assert clips.train_clip_size(720, 1280, 480, settings) == (480, 853)  # fits
    assert clips.train_clip_size(1280, 720, 480, settings) == (480, 270)  # 853x480 -> 480x270
    assert clips.train_clip_size(400, 2000, 480, settings) == (173, 864)  # 267x1333 -> 173x864


def test_nearest_indices_against_exact_fractions():
    for in_size, out_size in [(96, 360), (144, 540), (7, 3), (10, 10), (5, 13), (1280, 853)]:
        expected = [int(Fraction(2 * i + 1, 2) * Fraction(in_size, out_size))
                    for i in range(out_size)]
        assert nearest_source_indices(in_size, out_size).tolist() == expected


def test_resize_mask_picks_the_source_pixels():
    rng = np.random.default_rng(0)
    mask = rng.random((5, 7)) < 0.5
    resized = resize_mask(mask, 12, 4)
    for y in range(12):
        for x in range(4):
            assert resized[y, x] == mask[(2 * y + 1) * 5 // 24, (2 * x + 1) * 7 // 8]


# A 20 x 30 video of 6 frames whose pixels encode their position (see frame_pattern).
VH, VW, VL = 20, 30, 6


def make_video(tracks):
    frames = np.stack([frame_pattern(VH, VW, t) for t in range(VL)])
    return Video(video_id=5, height=VH, width=VW,
                 file_names=tuple(f"v/{t:05d}.jpg" for t in range(VL)),
                 frame_paths=(), tracks=tuple(tracks), frames=frames)


def make_track(track_id, label, masks_by_frame, iscrowd=False):
    segmentations = [None] * VL
    for frame, mask in masks_by_frame.items():
        segmentations[frame] = mask_codec.encode_mask(mask, "rle")
    return Track(track_id=track_id, category_id=label + 1, label=label, iscrowd=iscrowd,
                 segmentations=tuple(segmentations))


LEFT_BLOCK = rectangle_mask(VH, VW, 4, 0, 12, 8)
SETTINGS = clip_settings(num_frames=3, short_sides=(10,), max_size=100, flip_prob=0.5,
                              pad_height=32, pad_width=32, max_instances=4)


def build(tracks, frame_indices, flip, settings=SETTINGS):
    """build_train_clip's clip, with "masks" bool (N, T, H, W) beside: the instances' padded
    full-resolution masks (from clip_targets), checked to be what target_counts counts."""
    plan = clips.ClipPlan(np.array(frame_indices), frame_indices[0], 10, flip)
    video = make_video(tracks)
    clip = clips.build_train_clip(video, plan, settings)
    assert "masks" not in clip  # the targets are shipped at stride 4 only
    h, w = clip["image_size"].tolist()
    masks = np.zeros((settings.max_instances, len(frame_indices), settings.pad_height,
                      settings.pad_width), bool)
    for slot, (track, track_masks) in enumerate(
            clips.clip_targets(video, plan, (h, w), settings.max_instances)):
        assert clip["track_ids"][slot] == track.track_id
        masks[slot, :, :h, :w] = track_masks
    np.testing.assert_array_equal(clip["target_counts"], clips.stride4_counts(masks))
    return {**clip, "masks": masks}


def test_padding_mask_marks_exactly_the_padded_pixels():
    clip = build([make_track(1, 0, {t: LEFT_BLOCK for t in range(VL)})], [0, 2, 4], False)
    h, w = clip["image_size"].tolist()
    assert (h, w) == (10, 15)  # 20x30 at short side 10
    inside = (np.arange(32)[:, None] < h) & (np.arange(32)[None, :] < w)
    assert clip["padding_mask"].shape == (3, 32, 32)
    np.testing.assert_array_equal(clip["padding_mask"], np.broadcast_to(~inside, (3, 32, 32)))
    # Frames are >= 1 everywhere in the source, so zero pixels are exactly the padding.
    np.testing.assert_array_equal(clip["frames"].sum(-1) == 0, clip["padding_mask"])
    assert not clip["masks"][:, :, ~inside].any()
    # Grid row i counts rows 4i+1 and 4i+2: in a 10 x 15 clip grid row 3 (rows 13, 14) and
    # grid column 4 (columns 17, 18) are the first all in the padding.
    assert clip["target_counts"].shape == (4, 3, 8, 8)
    assert not clip["target_counts"][:, :, 3:].any() and not clip["target_counts"][..., 4:].any()


def test_flip_moves_masks_with_frames():
    tracks = [make_track(1, 0, {t: LEFT_BLOCK for t in range(VL)})]
    plain, flipped = build(tracks, [1, 3, 5], False), build(tracks, [1, 3, 5], True)
    h, w = plain["image_size"]
    np.testing.assert_array_equal(flipped["frames"][:, :h, :w], plain["frames"][:, :h, ::-1][
        :, :, -w:])
    np.testing.assert_array_equal(flipped["masks"][:, :, :h, :w],
                                  plain["masks"][:, :, :h, :w][..., ::-1])
    np.testing.assert_array_equal(flipped["padding_mask"], plain["padding_mask"])
    # The block sits on the left of the frame, so on the right after the flip, and the
    # pixels under it carry the source's left-side colours (R = 5x + 1 small) in both clips.
    assert plain["masks"][0, 0, :h, : w // 2].any() and not plain["masks"][0, 0, :h, w // 2:w].any()
    assert flipped["masks"][0, 0, :h, w // 2:w].any()
    for clip in (plain, flipped):
        under_mask = clip["frames"][0][clip["masks"][0, 0]]
        assert under_mask[:, 0].max() < 5 * 8 + 10


def test_masks_are_the_nearest_resize_of_the_annotation():
    rng = np.random.default_rng(3)
    random_masks = {t: rng.random((VH, VW)) < 0.3 for t in range(VL)}
    clip = build([make_track(1, 0, random_masks)], [0, 0, 4], False)
    h, w = clip["image_size"]
    rows = [(2 * y + 1) * VH // (2 * h) for y in range(h)]
    cols = [(2 * x + 1) * VW // (2 * w) for x in range(w)]
    for t, frame in enumerate([0, 0, 4]):
        expected = np.array([[random_masks[frame][r, c] for c in cols] for r in rows])
        np.testing.assert_array_equal(clip["masks"][0, t, :h, :w], expected)


def test_targets_follow_the_instance_rules():
    tiny_dot = np.zeros((VH, VW), dtype=bool)
    tiny_dot[2, 2] = True  # one pixel: the 2x downscale samples odd rows/cols, so it vanishes
    tracks = [
        make_track(1, 2, {0: LEFT_BLOCK, 1: LEFT_BLOCK}),           # present in frames 0, 1
        make_track(2, 1, {5: LEFT_BLOCK}),                          # not in the sampled frames
        make_track(3, 0, {t: LEFT_BLOCK for t in range(VL)}, iscrowd=True),
        make_track(4, 1, {0: tiny_dot, 2: tiny_dot}),               # vanishes after resize
        make_track(5, 0, {2: rectangle_mask(VH, VW, 10, 20, 20, 30), 0: tiny_dot}),
    ]
    clip = build(tracks, [0, 1, 2], False)
    assert clip["instance_valid"].tolist() == [True, True, False, False]
    assert clip["track_ids"].tolist() == [1, 5, -1, -1]
    assert clip["labels"].tolist()[:2] == [2, 0]
    # Track 5: its one-pixel frame 0 is empty after the resize, so absent there.
    assert clip["present"].tolist() == [[True, True, False], [False, False, True],
                                        [False] * 3, [False] * 3]
    np.testing.assert_array_equal(clip["present"], clip["masks"].any(axis=(2, 3)))
    # Empty slots, and frames where an instance is absent, have no target.
    assert not clip["target_counts"][~clip["present"]].any()
    assert clip["frame_indices"].tolist() == [0, 1, 2] and clip["video_id"] == 5


def test_extra_instances_keep_the_largest():
    tracks = [make_track(i + 1, 0, {0: rectangle_mask(VH, VW, 0, 0, 2 * (i % 3) + 2, 10)})
              for i in range(6)]  # heights 2, 4, 6, 2, 4, 6 rows
    settings = clip_settings(num_frames=3, short_sides=(10,), max_size=100,
                                  pad_height=32, pad_width=32, max_instances=2)
    clip = build(tracks, [0, 0, 0], False, settings)
    assert clip["track_ids"].tolist() == [3, 6]  # the two 6-row ones, in annotation order
