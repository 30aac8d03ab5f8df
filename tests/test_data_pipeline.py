"""The tf.data train and eval pipelines on a small toy dataset."""

import os

import numpy as np
import pytest

from ifc_jax.data import pipeline, sources
from ifc_jax.data.ytvis import load_ytvis
from ifc_jax.io import UserError
from tests.data_helpers import SMALL_TOY, clip_settings, make_small_toy

SETTINGS = clip_settings(num_frames=3, sampling_frame_range=2, short_sides=(32, 40),
                              max_size=64, flip_prob=0.5, pad_height=64, pad_width=64,
                              max_instances=4)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return make_small_toy(str(tmp_path_factory.mktemp("data") / "toy"))


@pytest.fixture(scope="module")
def train_split(toy_root):
    return load_ytvis(os.path.join(toy_root, "train.json"),
                      os.path.join(toy_root, "train", "JPEGImages"))


def take(dataset, count, **kwargs):
    options = dict(batch_size=2, seed=0, process_index=0, process_count=1)
    batches = pipeline.numpy_batches(
        pipeline.make_train_dataset(dataset, SETTINGS, **{**options, **kwargs}))
    result = [next(batches) for _ in range(count)]
    batches.close()
    return result


def test_batches_have_static_shapes_and_documented_dtypes(train_split):
    stream = pipeline.make_train_dataset(train_split, SETTINGS, batch_size=2, seed=0,
                                         process_index=0, process_count=1)
    expected = {name: (2, *shape) for name, shape in pipeline.clip_shapes(SETTINGS).items()}
    assert {k: tuple(v.shape) for k, v in stream.element_spec.items()} == expected
    assert expected["target_counts"] == (2, 4, 3, 16, 16)
    assert expected["frames"] == (2, 3, 64, 64, 3) and "masks" not in expected
    dtypes = {"frames": np.uint8, "padding_mask": np.bool_, "labels": np.int32,
              "instance_valid": np.bool_, "target_counts": np.uint8, "present": np.bool_,
              "frame_indices": np.int32, "video_id": np.int32}
    for batch in take(train_split, 3):
        for name, dtype in dtypes.items():
            assert batch[name].dtype == dtype and batch[name].shape == expected[name]
        # Padding mask = everything outside the resized clip (toy frames 48x64).
        for clip in range(2):
            h, w = batch["image_size"][clip]
            assert (h, w) in {(32, 43), (40, 53)}  # short side 32 or 40
            assert not batch["padding_mask"][clip, :, :h, :w].any()
            assert batch["padding_mask"][clip, :, h:].all()
            assert batch["padding_mask"][clip, :, :, w:].all()
        labels_ok = (batch["labels"] >= 0) & (batch["labels"] < 4)
        assert labels_ok.all()
        # A target needs a visible mask (a thin one may leave none at stride 4).
        assert not batch["target_counts"][~batch["present"]].any()
        assert batch["target_counts"].max() <= 4 and batch["target_counts"].any()
        assert batch["present"][batch["instance_valid"]].any(axis=-1).all()
        assert not batch["present"][~batch["instance_valid"]].any()


def test_the_stream_is_not_autotuned_and_minus_one_is_one_call_per_core(train_split,
                                                                          monkeypatch):
    """With tf.data's autotuning, destroying the iterator (the end of every run, a preempted
    job's exit) waited for its threads, many seconds per process: the stream has fixed
    sizes."""
    monkeypatch.setattr(pipeline, "available_cores", lambda: 3)
    assert pipeline.parallel_calls(-1) == 3 and pipeline.parallel_calls(5) == 5
    monkeypatch.setattr(pipeline, "available_cores", lambda: 96)
    assert pipeline.parallel_calls(-1) == 16 and pipeline.parallel_calls(32) == 32
    stream = pipeline.make_train_dataset(train_split, SETTINGS, batch_size=2, seed=0,
                                         process_index=0, process_count=1)
    assert stream.options().autotune.enabled is False


def test_frame_indices_obey_the_sampling_rules(train_split):
    lengths = {v.video_id: v.length for v in train_split.videos}
    for batch in take(train_split, 12):
        for indices, video_id in zip(batch["frame_indices"], batch["video_id"], strict=True):
            length = lengths[int(video_id)]
            assert np.all(np.diff(indices) >= 0) and indices.min() >= 0
            assert indices.max() < length
            # Some frame (the reference) appears once with all others within +-2 of it.
            assert any(np.sum(indices == r) == 1 and np.all(np.abs(indices - r) <= 2)
                       for r in indices)


def test_same_seed_same_clips_other_seed_other_clips(train_split):
    first, second = take(train_split, 4), take(train_split, 4)
    for a, b in zip(first, second, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    other = take(train_split, 4, seed=1)
    assert any(not np.array_equal(a["frame_indices"], b["frame_indices"])
               or not np.array_equal(a["video_id"], b["video_id"])
               for a, b in zip(first, other, strict=True))


def test_resuming_at_a_batch_reproduces_the_stream(train_split):
    fresh = take(train_split, 5)
    resumed = take(train_split, 2, start_batch=3)
    for a, b in zip(fresh[3:], resumed, strict=True):
        np.testing.assert_array_equal(a["frames"], b["frames"])
        np.testing.assert_array_equal(a["target_counts"], b["target_counts"])


def test_two_processes_split_each_epoch_and_agree_with_one(train_split):
    per_epoch = len(train_split.videos) // 2  # 6 videos -> 3 clips per process per epoch
    single = take(train_split, 3, batch_size=2)  # epoch 0 of one process: all 6 videos
    seen = {}
    for process in (0, 1):
        batches = take(train_split, 3, batch_size=1, process_index=process, process_count=2)
        ids = [int(b["video_id"][0]) for b in batches[:per_epoch]]
        seen[process] = ids
        # The same (epoch, video) gives the very same clip whatever the process count.
        for b in batches[:per_epoch]:
            for s in single:
                for k in range(2):
                    if s["video_id"][k] == b["video_id"][0]:
                        np.testing.assert_array_equal(s["frame_indices"][k],
                                                      b["frame_indices"][0])
                        np.testing.assert_array_equal(s["target_counts"][k],
                                                      b["target_counts"][0])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(v.video_id for v in train_split.videos)


def test_broken_jpeg_is_one_clear_error_not_a_tensorflow_traceback(tmp_path):
    root = make_small_toy(str(tmp_path / "toy"), num_train=2, num_val=1)
    dataset = load_ytvis(os.path.join(root, "train.json"),
                         os.path.join(root, "train", "JPEGImages"))
    for path in dataset.videos[0].frame_paths + dataset.videos[1].frame_paths:
        with open(path, "wb") as f:
            f.write(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError) as info:
        take(dataset, 1)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "unreadable JPEG" in message and "train/JPEGImages/train_000" in message
    assert "video " in message and "train.json" in message


def test_split_without_annotations_cannot_train(train_split):
    unannotated = type(train_split)(**{**train_split.__dict__, "has_annotations": False})
    with pytest.raises(UserError, match="no 'annotations'"):
        take(unannotated, 1)


def test_eval_videos_are_whole_resized_videos(toy_root):
    dataset = load_ytvis(os.path.join(toy_root, "valid.json"),
                         os.path.join(toy_root, "valid", "JPEGImages"))
    videos = list(sources.iterate_eval_videos(dataset, 24, 100))
    assert [v["video_id"] for v in videos] == [v.video_id for v in dataset.videos]
    for element, source in zip(videos, dataset.videos, strict=True):
        assert element["frames"].shape == (source.length, 24, 32, 3)  # 48x64 -> 24x32
        assert (element["orig_height"], element["orig_width"]) == (48, 64)
        assert element["length"] == source.length
        assert element["file_names"] == list(source.file_names)
    # Two processes share the videos without overlap.
    shares = [[v["video_id"] for v in sources.iterate_eval_videos(
        dataset, 24, 100, process_index=p, process_count=2)] for p in (0, 1)]
    assert sorted(shares[0] + shares[1]) == [v.video_id for v in dataset.videos]
    assert not set(shares[0]) & set(shares[1])


def test_config_entry_points(toy_root):
    import ml_collections

    from ifc_jax.config import recipe

    config = recipe("tiny")
    config.data.root = toy_root
    config.data.toy = ml_collections.ConfigDict(SMALL_TOY)
    batches = pipeline.train_batches(config, process_index=0, process_count=1)
    batch = next(batches)
    batches.close()
    T, N = config.data.num_frames, config.data.max_instances
    assert batch["target_counts"].shape == (config.train.batch_size, N, T,
                                            config.data.pad_height // 4,
                                            config.data.pad_width // 4)
    videos = list(sources.iterate_eval_videos(sources.load_split(config.data, "val"),
                                              config.data.test_short_side,
                                              config.data.test_max_size))
    assert len(videos) == 3 and isinstance(videos[0]["file_names"][0], str)
    assert videos[0]["frames"].shape[1:3] == (config.data.test_short_side,
                                              videos[0]["width"])


def test_instance_masks_cover_their_objects_colour(toy_root, train_split):
    """End to end (resize, flip, pad, labels, stride-4 targets): under each instance's full
    target pixels lies its class's colour."""
    import json

    from ifc_jax.data import toy

    with open(os.path.join(toy_root, "train.json"), encoding="utf-8") as f:
        blurred = {v["id"]: set(v["toy_blurred_frames"]) for v in json.load(f)["videos"]}
    colours = {c.category_id: np.array(c.colour) for c in toy.CLASSES}
    checked = 0
    for batch in take(train_split, 6):
        for clip in range(2):
            video_id = int(batch["video_id"][clip])
            for slot in np.flatnonzero(batch["instance_valid"][clip]):
                category = train_split.categories.to_dataset_id(batch["labels"][clip, slot])
                for t, frame in enumerate(batch["frame_indices"][clip]):
                    # Target pixels whose 4 sampled pixels (the centre 2 x 2 of a 4 x 4
                    # block) are all in the mask: those pixels lie inside the object, away
                    # from the edges that blend with the background when resized.
                    full = batch["target_counts"][clip, slot, t] == 4
                    if int(frame) in blurred[video_id] or full.sum() < 3:
                        continue
                    image = batch["frames"][clip, t]
                    mean = np.concatenate([image[row::4, col::4][full] for row in (1, 2)
                                           for col in (1, 2)]).mean(axis=0)
                    nearest = min(colours, key=lambda c: np.abs(mean - colours[c]).sum())
                    assert nearest == category
                    checked += 1
    assert checked > 20
