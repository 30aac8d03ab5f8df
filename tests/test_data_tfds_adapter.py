"""TFDS youtube_vis examples -> YouTube-VIS records (null frames restored), written to disk.

The examples are built in the builder's feature structure and, in one test, pushed through the
real `youtube_vis` FeaturesDict (serialise + parse with TensorFlow), so the adapter sees exactly
what `tfds.as_numpy` gives for a real build.
"""

import os

import numpy as np
import pytest

from ifc_jax.data import clips, tfds_adapter
from ifc_jax.data.frames import load_frame
from ifc_jax.data.ytvis import load_ytvis
from ifc_jax.io import UserError
from tests.data_helpers import clip_settings, frame_pattern, rectangle_mask

H, W, L = 6, 8, 5
NAMES = ["person", "giant_panda", "lizard", "parrot"]
MASK_A1 = rectangle_mask(H, W, 1, 2, 3, 5)
MASK_A3 = rectangle_mask(H, W, 0, 0, 6, 3)
MASK_B0 = rectangle_mask(H, W, 4, 4, 6, 8)


def bbox(mask):
    """Normalised (ymin, xmin, ymax, xmax) of a mask, as TFDS stores boxes."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [rows[0] / H, cols[0] / W, (rows[-1] + 1) / H, (cols[-1] + 1) / W]


def example(frames_a=(1, 3), frames_b=(0,)):
    """One video in the youtube_vis feature layout: a lizard on 2 frames, a crowd of persons."""
    masks_a = [MASK_A1, MASK_A3][: len(frames_a)]
    return {
        "video": np.stack([frame_pattern(H, W, t) for t in range(L)]),
        "metadata": {"height": H, "width": W, "num_frames": L, "video_name": b"abc"},
        "tracks": [
            {"bboxes": np.array([bbox(m) for m in masks_a], np.float32),
             "segmentations": np.stack(masks_a)[..., None].astype(np.uint8),
             "category": 2, "is_crowd": False, "areas": np.array([99.0] * len(masks_a)),
             "frames": np.array(frames_a, np.int32)},
            {"bboxes": np.array([bbox(MASK_B0)], np.float32),
             "segmentations": MASK_B0[None, ..., None].astype(np.uint8),
             "category": 0, "is_crowd": True, "areas": np.array([1.0]),
             "frames": np.array(frames_b, np.int32)},
        ],
    }


def check_converted(video, annotations, frames):
    assert video == {"id": 7, "height": H, "width": W, "length": L,
                     "file_names": [f"abc/{t:05d}.png" for t in range(L)]}
    np.testing.assert_array_equal(frames, np.stack([frame_pattern(H, W, t) for t in range(L)]))
    lizard, crowd = annotations
    assert (lizard["category_id"], lizard["iscrowd"], crowd["category_id"], crowd["iscrowd"]) \
        == (3, 0, 1, 1)
    assert [s is None for s in lizard["segmentations"]] == [True, False, True, False, True]
    assert lizard["areas"] == [None, 6.0, None, 18.0, None]  # recounted from the masks
    assert [b is None for b in lizard["bboxes"]] == [True, False, True, False, True]
    assert lizard["bboxes"][1] == pytest.approx([2.0, 1.0, 3.0, 2.0])  # xywh in pixels
    assert lizard["bboxes"][3] == pytest.approx([0.0, 0.0, 3.0, 6.0])
    assert [s is None for s in crowd["segmentations"]] == [False, True, True, True, True]


def test_example_to_ytvis_restores_the_null_frames():
    video, annotations, frames = tfds_adapter.example_to_ytvis(example(), 7)
    check_converted(video, annotations, frames)


def test_examples_parsed_by_the_real_youtube_vis_features(tmp_path):
    from ifc_jax.data.pipeline import import_tensorflow

    tf = import_tensorflow()
    import tensorflow_datasets as tfds

    features = tfds.builder("youtube_vis/only_frames_with_labels",
                            data_dir=str(tmp_path)).info.features
    raw = example()
    for track in raw["tracks"]:
        track["bboxes"] = [tfds.features.BBox(*box) for box in track["bboxes"].tolist()]
    serialized = features.serialize_example(raw)
    parsed = tf.data.Dataset.from_tensors(serialized).map(features.deserialize_example)
    (decoded,) = list(tfds.as_numpy(parsed))
    assert not isinstance(decoded["tracks"], list)  # per-field ragged tensors, not dicts
    video, annotations, frames = tfds_adapter.example_to_ytvis(decoded, 7)
    check_converted(video, annotations, frames)
    assert list(features["tracks"]["category"].names[:4]) == NAMES


def test_full_builds_keep_every_fifth_frame_style_strides():
    video, annotations, frames = tfds_adapter.example_to_ytvis(
        example(frames_a=(2, 4), frames_b=(0,)), 7, annotated_frame_stride=2)
    assert video["file_names"] == ["abc/00000.png", "abc/00002.png", "abc/00004.png"]
    assert len(frames) == 3 and frames[1][0, 0, 2] == 30 * 2 + 1
    assert [s is None for s in annotations[0]["segmentations"]] == [True, False, False]
    with pytest.raises(UserError, match="labelled on frame 1, not an annotated frame"):
        tfds_adapter.example_to_ytvis(example(frames_a=(1, 3)), 7, annotated_frame_stride=2)


def test_exported_dataset_feeds_the_clip_builder(tmp_path):
    json_path = str(tmp_path / "train.json")
    frames_dir = str(tmp_path / "train" / "JPEGImages")
    tfds_adapter.export_ytvis_layout([example(), example(frames_a=(0, 4))], NAMES, json_path,
                                     frames_dir)
    dataset = load_ytvis(json_path, frames_dir)
    assert [v.video_id for v in dataset.videos] == [1, 2]
    assert dataset.categories.to_contiguous(3) == 2
    second = dataset.videos[1]
    assert [t.track_id for t in second.tracks] == [3, 4]
    settings = clip_settings(num_frames=2, short_sides=(H,), max_size=100,
                                  pad_height=32, pad_width=32, max_instances=3)
    clip = clips.build_train_clip(second, clips.ClipPlan(np.array([0, 4]), 0, H, False),
                                  settings)
    # Decoded frames are written as PNG: exact.
    np.testing.assert_array_equal(clip["frames"][1, :H, :W], frame_pattern(H, W, 4))
    padded = np.zeros((32, 32), bool)
    padded[:H, :W] = MASK_A3
    np.testing.assert_array_equal(clip["target_counts"][0, 1], clips.stride4_counts(padded))
    assert clip["target_counts"][0, 1].any()
    assert clip["labels"].tolist()[:1] == [2] and clip["instance_valid"].tolist() == [
        True, False, False]  # the crowd track is not a target


def test_export_then_read_back_with_the_json_reader(tmp_path):
    json_path = str(tmp_path / "train.json")
    frames_dir = str(tmp_path / "train" / "JPEGImages")
    tfds_adapter.export_ytvis_layout([example()], NAMES, json_path, frames_dir)
    dataset = load_ytvis(json_path, frames_dir)
    (video,) = dataset.videos
    assert video.length == L and os.path.isfile(video.frame_paths[4])
    lizard = video.tracks[0]
    np.testing.assert_array_equal(lizard.mask(1, H, W), MASK_A1)
    np.testing.assert_array_equal(lizard.mask(3, H, W), MASK_A3)
    assert lizard.mask(0, H, W) is None
    np.testing.assert_array_equal(load_frame(video, 2), frame_pattern(H, W, 2))


def tfds_config(tmp_path):
    from ifc_jax.config import recipe

    data = recipe("tiny").data
    data.dataset = "tfds"
    data.root = str(tmp_path / "exported")
    data.tfds_data_dir = str(tmp_path / "tfds")
    return data


def test_tfds_source_is_exported_once_then_read(tmp_path, monkeypatch):
    import types

    import tensorflow_datasets as tfds

    from ifc_jax.data import sources

    calls = []

    class FakeBuilder:  # what tfds.builder returns for a finished build
        info = types.SimpleNamespace(features={"tracks": {"category": types.SimpleNamespace(
            names=NAMES)}})

        def as_dataset(self, split, decoders=None):
            calls.append(split)
            return [example(), example(frames_a=(0, 2))]

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: FakeBuilder())
    monkeypatch.setattr(tfds, "as_numpy", lambda dataset: dataset)
    data = tfds_config(tmp_path)
    dataset = sources.load_split(data, "val")
    assert calls == ["validation"]
    assert dataset.json_path == os.path.join(data.root, "valid.json")
    assert [len(v.tracks) for v in dataset.videos] == [2, 2]
    np.testing.assert_array_equal(dataset.videos[1].tracks[0].mask(2, H, W), MASK_A3)
    assert dataset.categories.names == tuple(NAMES)
    sources.load_split(data, "val")
    assert calls == ["validation"], "the second load reads the export, not TFDS"


def test_missing_tfds_build_is_a_clear_error(tmp_path):
    from ifc_jax.data import sources

    with pytest.raises(UserError, match="config.data.tfds_name=.*cannot read the TFDS build"):
        sources.load_split(tfds_config(tmp_path), "train")
