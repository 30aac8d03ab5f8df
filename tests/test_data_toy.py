"""The toy dataset: exact mask round trip in every encoding, determinism, idempotence, content."""

import json
import os

import numpy as np
import pytest

from ifc_jax.data import masks as mask_codec
from ifc_jax.data import toy
from ifc_jax.data.frames import load_frame
from ifc_jax.data.ytvis import load_ytvis
from ifc_jax.io import UserError
from tests.data_helpers import SMALL_TOY, make_small_toy


@pytest.mark.parametrize("encoding", ["rle", "uncompressed_rle", "polygon", "mixed"])
def test_masks_read_back_identical_in_every_encoding(tmp_path, encoding):
    root = make_small_toy(str(tmp_path / "toy"), mask_encoding=encoding)
    spec = toy.ToySpec(**SMALL_TOY, mask_encoding=encoding)
    kinds = set()
    for split, count in (("train", spec.num_train), ("valid", spec.num_val)):
        dataset = load_ytvis(os.path.join(root, f"{split}.json"),
                             os.path.join(root, split, "JPEGImages"))
        assert len(dataset.videos) == count
        for index, video in enumerate(dataset.videos):
            rendered = toy.render_video(spec, split, index)
            visible = [m for m in rendered.masks if m.any()]  # never-visible objects: no track
            assert len(video.tracks) == len(visible)
            for track, object_masks in zip(video.tracks, visible, strict=True):
                for frame in range(video.length):
                    decoded = track.mask(frame, video.height, video.width)
                    if object_masks[frame].any():
                        np.testing.assert_array_equal(decoded, object_masks[frame])
                        kinds.add(mask_codec.segmentation_kind(track.segmentations[frame]))
                    else:
                        assert decoded is None
    assert kinds == (set(mask_codec.ENCODINGS) if encoding == "mixed" else {encoding})


def test_json_fields_and_frames(tmp_path):
    root = make_small_toy(str(tmp_path / "toy"))
    with open(os.path.join(root, "train.json"), encoding="utf-8") as f:
        content = json.load(f)
    assert [c["id"] for c in content["categories"]] == [1, 2, 3, 4]
    for annotation in content["annotations"]:
        assert annotation["iscrowd"] == 0 and annotation["id"] >= 1
        for segmentation, area, box in zip(annotation["segmentations"], annotation["areas"],
                                           annotation["bboxes"], strict=True):
            if segmentation is None:
                assert area is None and box is None
            else:
                mask = mask_codec.decode_segmentation(segmentation, SMALL_TOY["height"],
                                                      SMALL_TOY["width"])
                assert area == mask.sum() and box == mask_codec.mask_bbox(mask)
    spec = toy.ToySpec(**SMALL_TOY)
    dataset = load_ytvis(os.path.join(root, "train.json"),
                         os.path.join(root, "train", "JPEGImages"))
    rendered = toy.render_video(spec, "train", 2)
    for frame in range(dataset.videos[2].length):
        decoded = load_frame(dataset.videos[2], frame).astype(float)
        assert np.abs(decoded - rendered.frames[frame]).mean() < 6  # only JPEG loss


def _tree_bytes(root: str) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = _tree_bytes(make_small_toy(str(tmp_path / "a"), seed=3))
    second = _tree_bytes(make_small_toy(str(tmp_path / "b"), seed=3))
    assert first == second
    other = _tree_bytes(make_small_toy(str(tmp_path / "c"), seed=4))
    assert other["train.json"] != first["train.json"]


def test_generation_is_idempotent_and_atomic(tmp_path):
    root = str(tmp_path / "toy")
    make_small_toy(root)
    before = os.stat(os.path.join(root, "train.json"))
    make_small_toy(root)  # same parameters: nothing is rewritten
    after = os.stat(os.path.join(root, "train.json"))
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    make_small_toy(root, num_train=2)  # other parameters: replaced as a whole
    with open(os.path.join(root, "train.json"), encoding="utf-8") as f:
        assert len(json.load(f)["videos"]) == 2
    assert sorted(os.listdir(tmp_path)) == ["toy"], "no staging folders left behind"
    assert toy.is_generated(root, toy.ToySpec(**{**SMALL_TOY, "num_train": 2}))


def test_refuses_to_replace_a_folder_that_is_not_toy_data(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a toy dataset"):
        make_small_toy(str(tmp_path / "precious"))
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_a_dataset_with_the_users_own_files_is_not_replaced(tmp_path):
    root = tmp_path / "toy"
    make_small_toy(str(root))
    (root / "my_val_subset.json").write_text("keep me")  # e.g. a `split` output
    (root / "valid" / "notes.txt").write_text("me too")
    with pytest.raises(UserError, match=r"my_val_subset.json, valid/notes.txt, which the "
                                        r"generator did not write"):
        make_small_toy(str(root), num_train=2)  # other parameters
    assert (root / "my_val_subset.json").read_text() == "keep me"
    assert (root / "valid" / "notes.txt").read_text() == "me too"
    assert toy.is_generated(str(root), toy.ToySpec(**SMALL_TOY)), "the old dataset is kept"
    make_small_toy(str(root))  # the same parameters: still accepted, nothing rewritten
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        make_small_toy(str(tmp_path / "file"))


def test_default_videos_have_the_hard_cases():
    """Over the first 40 default-size train videos (rendered in memory, not written)."""
    spec = toy.ToySpec()
    lengths, object_counts, classes = set(), set(), set()
    entering_or_leaving = occluded = fully_hidden = blurred = 0
    frames_seen = 0
    for index in range(40):
        video = toy.render_video(spec, "train", index)
        lengths.add(len(video.frames))
        object_counts.add(len(video.objects))
        frames_seen += len(video.frames)
        blurred += len(video.blurred_frames)
        assert video.frames.shape[1:] == (spec.height, spec.width, 3)
        for obj, masks in zip(video.objects, video.masks, strict=True):
            classes.add(obj.class_index)
            present = masks.any(axis=(1, 2))
            entering_or_leaving += bool(present.any() and not present.all())
            for frame in range(len(video.frames)):
                alive = obj.first_frame <= frame < obj.last_frame
                shape = toy.shape_mask(obj, frame, spec.height, spec.width) if alive else None
                if shape is None or not shape.any():
                    continue
                rows, cols = np.flatnonzero(shape.any(1)), np.flatnonzero(shape.any(0))
                if rows[0] > 0 and rows[-1] < spec.height - 1 and cols[0] > 0 \
                        and cols[-1] < spec.width - 1:
                    # Fully inside the frame: big enough to see at stride 8.
                    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 16
                    hidden = shape & ~masks[frame]
                    occluded += bool(hidden.any())
                    fully_hidden += bool(not masks[frame].any())
    assert min(lengths) >= spec.min_frames and max(lengths) <= spec.max_frames
    assert len(lengths) >= 5, "lengths vary"
    assert object_counts == {1, 2, 3, 4}
    assert classes == {0, 1, 2, 3}
    assert entering_or_leaving >= 5 and occluded >= 20 and fully_hidden >= 1
    assert 0.05 < blurred / frames_seen < 0.3


def test_two_frame_videos(tmp_path):
    """The shortest videos the generator allows: objects cannot vanish mid-video."""
    root = str(tmp_path / "toy")
    toy.generate_toy_dataset(root, seed=1, num_train=2, num_val=2, min_frames=2, max_frames=2)
    dataset = load_ytvis(os.path.join(root, "valid.json"),
                         os.path.join(root, "valid", "JPEGImages"))
    assert {video.length for video in dataset.videos} == {2}
