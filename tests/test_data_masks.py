"""Segmentation encodings: hand-computed RLE counts and lossless round trips."""

import numpy as np
import pytest

from ifc_jax.data import masks as mask_codec


def test_uncompressed_rle_counts_by_hand():
    # 3x2 mask, column-major pixels: (0,0) (1,0) (2,0) (0,1) (1,1) (2,1) = 0 1 1 0 0 1
    mask = np.array([[0, 0], [1, 0], [1, 1]], dtype=bool)
    rle = mask_codec.encode_uncompressed_rle(mask)
    assert rle == {"size": [3, 2], "counts": [1, 2, 2, 1]}
    # A mask starting with a set pixel begins with a zero-length run of zeros.
    rle = mask_codec.encode_uncompressed_rle(np.ones((2, 2), dtype=bool))
    assert rle["counts"] == [0, 4]


def test_compressed_rle_by_hand():
    # Runs 1, 2, 2, 1: '1', '2', '2', then the 4th run is stored as 1 - 2 = -1 -> 5 bits
    # 11111 with the sign bit set -> 31 + 48 = 'O'.
    mask = np.array([[0, 0], [1, 0], [1, 1]], dtype=bool)
    assert mask_codec.encode_rle(mask) == {"size": [3, 2], "counts": "122O"}
    assert mask_codec.compressed_rle_counts("122O").tolist() == [1, 2, 2, 1]
    # Multi-character numbers: 100 = 0b11_00100 -> '0' + (4 | 0x20) = 'T', then '3'.
    assert mask_codec.compressed_rle_counts("T3").tolist() == [100]


def test_compressed_rle_counts_match_the_run_lengths_of_random_masks():
    rng = np.random.default_rng(1)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 60, size=2))
        mask = rng.random((height, width)) < rng.uniform(0.01, 0.99)
        counts = mask_codec.encode_rle(mask)["counts"]
        expected = mask_codec.encode_uncompressed_rle(mask)["counts"]
        assert mask_codec.compressed_rle_counts(counts).tolist() == expected


def test_compressed_rle_runs_of_many_strings_at_once():
    rng = np.random.default_rng(2)
    strings, expected, owners = [], [], []
    for index in range(40):
        height, width = (int(v) for v in rng.integers(1, 40, size=2))
        mask = rng.random((height, width)) < rng.uniform(0.0, 1.0)
        strings.append(mask_codec.encode_rle(mask)["counts"])
        runs = mask_codec.encode_uncompressed_rle(mask)["counts"]  # pycocotools-independent
        expected += runs
        owners += [index] * len(runs)
    runs, owner = mask_codec.compressed_rle_runs(strings)
    assert runs.tolist() == expected and owner.tolist() == owners
    for bad, message in (("", "non-empty"), ("1~", "'0'..'o'"), ("1o", "middle of a number")):
        with pytest.raises(mask_codec.SegmentationFormatError, match=message) as info:
            mask_codec.compressed_rle_runs([strings[0], strings[1], bad, strings[2]])
        assert info.value.index == 2


def test_run_totals_name_the_first_bad_rle_of_many():
    # 2x3 frames (6 pixels each): the runs of all RLEs, and the RLE each run belongs to.
    owner = np.array([0, 0, 1, 1, 1, 2])
    mask_codec.check_run_totals(np.array([2, 4, 0, 5, 1, 6]), owner, 3, 2, 3)
    cases = ((np.array([2, 4, 0, 5, 2, 6]), owner, 3, "sum to 7, not 2x3 = 6", 1),
             (np.array([2, 4, 0, 7, -1, 6]), owner, 3, "must not be negative", 1),
             # A fourth RLE with no runs at all covers nothing.
             (np.array([2, 4, 0, 5, 1, 6]), owner, 4, "sum to 0, not 2x3 = 6", 3))
    for runs, owners, count, message, index in cases:
        with pytest.raises(mask_codec.SegmentationFormatError, match=message) as info:
            mask_codec.check_run_totals(runs, owners, count, 2, 3)
        assert info.value.index == index


def test_hand_written_uncompressed_rle_decodes():
    # 6x8 mask with rows 1-2 of columns 2-3 set: 13 zeros, 2 ones, 4 zeros, 2 ones, 27 zeros.
    segmentation = {"size": [6, 8], "counts": [13, 2, 4, 2, 27]}
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:3, 2:4] = True
    np.testing.assert_array_equal(mask_codec.decode_segmentation(segmentation, 6, 8), expected)


def test_polygon_on_pixel_corners_fills_the_pixels_inside():
    # Rectangle with corners (x, y) = (2, 1) and (5, 3): pixels x 2..4, y 1..2.
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:3, 2:5] = True
    decoded = mask_codec.decode_segmentation([[2, 1, 5, 1, 5, 3, 2, 3]], 6, 8)
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("encoding", mask_codec.ENCODINGS)
def test_every_encoding_round_trips_random_masks(encoding):
    rng = np.random.default_rng(0)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(1, 30, size=2))
        mask = rng.random((height, width)) < rng.uniform(0.05, 0.95)
        if not mask.any():
            continue
        encoded = mask_codec.encode_mask(mask, encoding)
        assert mask_codec.segmentation_kind(encoded) == encoding
        np.testing.assert_array_equal(
            mask_codec.decode_segmentation(encoded, height, width), mask)


def test_empty_mask_encodes_as_absent_and_absent_forms_decode_to_none():
    assert mask_codec.encode_mask(np.zeros((4, 4), dtype=bool), "rle") is None
    for absent in (None, [], {}):
        assert mask_codec.is_absent(absent)
        assert mask_codec.decode_segmentation(absent, 4, 4) is None


def test_bbox_of_mask():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert mask_codec.mask_bbox(mask) == [3.0, 2.0, 6.0, 3.0]


@pytest.mark.parametrize("segmentation, message", [
    ({"size": [5, 8], "counts": [40]}, "mask size 5x8 differs from the video's 6x8"),
    ({"size": [6, 8], "counts": [10, 3]}, "counts sum to 13"),
    ({"size": [6, 8], "counts": [40, -2, 10]}, "must not be negative"),
    ({"size": [6, 8], "counts": [2**70, 3]}, "must lie in 0..48"),  # numpy: OverflowError
    # Four runs of 2**62 wrap an int64 sum around to 0: 0 + 48 = 48 would pass.
    ({"size": [6, 8], "counts": [2**62] * 4 + [48]}, "must lie in 0..48"),
    ({"size": [6, 8], "counts": ""}, "non-empty string"),
    ({"size": [6, 8], "counts": "\u00e9"}, "characters '0'..'o'"),  # aborts pycocotools
    ({"size": [6, 8], "counts": "abc"}, "end in the middle of a number"),
    ({"size": [6, 8], "counts": "122O"}, "counts sum to 6, not 6x8 = 48"),
    ([[0, 0, "x", 1, 2, 2]], "coordinates must be numbers"),
    ({"counts": "abc"}, "needs both 'size' and 'counts'"),
    ("not a mask", "expected RLE"),
    ([[1, 2, 3]], "even number of coordinates"),
])
def test_malformed_segmentations_are_rejected(segmentation, message):
    with pytest.raises(mask_codec.SegmentationFormatError, match=message):
        mask_codec.check_segmentation(segmentation, 6, 8)


def test_rle_helpers_accept_str_bytes_and_uncompressed_counts():
    rng = np.random.default_rng(2)
    first, second = rng.random((2, 9, 7)) > 0.5
    rle = mask_codec.encode_rle(first)
    as_bytes = {"size": tuple(rle["size"]), "counts": rle["counts"].encode()}
    for form in (rle, as_bytes, mask_codec.encode_uncompressed_rle(first)):
        np.testing.assert_array_equal(mask_codec.decode_rle(form), first)
    other = mask_codec.encode_rle(second)
    assert mask_codec.rle_areas([rle, as_bytes, mask_codec.empty_rle(9, 7)]).tolist() == [
        int(first.sum())] * 2 + [0]
    assert mask_codec.rle_areas([]).shape == (0,)
    assert mask_codec.rle_intersection_area(rle, other) == int((first & second).sum())
    x, y, w, h = mask_codec.rle_boxes([rle])[0]
    assert [x, y, w, h] == mask_codec.mask_bbox(first)
    with pytest.raises(ValueError, match="expected a \\(H, W\\) mask"):
        mask_codec.encode_rle(np.zeros((2, 3, 4), bool))
