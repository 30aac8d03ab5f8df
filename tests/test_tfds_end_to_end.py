"""A TFDS `youtube_vis` build as the data source, end to end: the export keeps the official
video ids, frame files, sizes and masks; a full build needs its frame stride; `train` and
`evaluate` run from it; and its results.json equals the one made from the original files.

The build is made by tests/tfds_builder.py (TFDS's own youtube_vis features and example code,
without Beam) from a toy dataset in the official format (uncompressed RLE masks).
"""

import filecmp
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ifc_jax.data import sources
from ifc_jax.data.toy import generate_toy_dataset
from ifc_jax.data.ytvis import load_ytvis
from ifc_jax.io import UserError
from tests.test_train_loop import DEVICE_MATCHER, SMALL_MODEL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [*SMALL_MODEL, "--config.train.batch_size=2", DEVICE_MATCHER]  # 2 clips per step


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(folder, the raw toy dataset, the TFDS name of its build, TFDS data dir)."""
    from tests import tfds_builder

    base = tmp_path_factory.mktemp("tfds")
    raw = generate_toy_dataset(str(base / "raw"), num_train=4, num_val=2, height=96,
                               width=144, min_frames=4, max_frames=9,
                               mask_encoding="uncompressed_rle")
    data_dir = str(base / "tfds")
    return base, raw, tfds_builder.build(raw, data_dir), data_dir


def _tfds_data(name, data_dir, root, manual_dir=""):
    from ifc_jax.config import recipe

    data = recipe("tiny").data
    data.dataset, data.root = "tfds", str(root)
    data.tfds_name, data.tfds_data_dir, data.tfds_manual_dir = name, data_dir, manual_dir
    return data


def _same_dataset(exported, original):
    assert [v.video_id for v in exported.videos] == [v.video_id for v in original.videos]
    assert exported.categories == original.categories
    for ours, theirs in zip(exported.videos, original.videos, strict=True):
        assert (ours.height, ours.width, ours.file_names) == (theirs.height, theirs.width,
                                                              theirs.file_names)
        for a, b in zip(ours.frame_paths, theirs.frame_paths, strict=True):
            assert filecmp.cmp(a, b, shallow=False)  # the JPEG files, byte for byte
        assert [t.category_id for t in ours.tracks] == [t.category_id for t in theirs.tracks]
        for a, b in zip(ours.tracks, theirs.tracks, strict=True):
            for frame in range(ours.length):
                expected = b.mask(frame, theirs.height, theirs.width)
                got = a.mask(frame, ours.height, ours.width)
                assert (got is None) == (expected is None)
                if expected is not None:
                    np.testing.assert_array_equal(got, expected)


def test_the_export_keeps_official_ids_files_sizes_and_masks(built, caplog):
    base, raw, name, data_dir = built
    data = _tfds_data(name, data_dir, base / "export", manual_dir=raw)
    for split, json_name, frames in (("train", "train.json", "train/JPEGImages"),
                                     ("val", "valid.json", "valid/JPEGImages")):
        _same_dataset(sources.load_split(data, split),
                      load_ytvis(os.path.join(raw, json_name), os.path.join(raw, frames)))
    # Without the official files: numbered in the build's order, and a warning says so.
    data = _tfds_data(name, data_dir, base / "export_plain")
    with caplog.at_level(logging.WARNING, logger="ifc_jax.data"):
        dataset = sources.load_split(data, "val")
    assert sorted(v.video_id for v in dataset.videos) == [1, 2]
    assert "cannot be submitted" in caplog.text


def test_a_full_build_needs_its_frame_stride(built, tmp_path):
    """Official files annotate every 2nd frame here while the folders hold every frame (as
    YouTube-VIS annotates every 5th): the full build has them all."""
    from tests import tfds_builder

    base, raw, _, _ = built
    manual = tmp_path / "manual"
    shutil.copytree(raw, manual)
    for json_name in ("train.json", "valid.json"):
        content = json.loads((manual / json_name).read_text())
        for video in content["videos"]:
            video["file_names"] = video["file_names"][::2]
            video["length"] = len(video["file_names"])
        for track in content["annotations"]:
            for key in ("segmentations", "areas", "bboxes"):
                track[key] = track[key][::2]
        content["annotations"] = [t for t in content["annotations"]
                                  if any(s is not None for s in t["segmentations"])]
        (manual / json_name).write_text(json.dumps(content))
    data_dir = str(tmp_path / "tfds")
    name = tfds_builder.build(str(manual), data_dir, config="full")
    data = _tfds_data(name, data_dir, tmp_path / "export", manual_dir=str(manual))
    with pytest.raises(UserError, match="needs config.data.tfds_frame_stride=2"):
        sources.load_split(data, "val")
    data.tfds_frame_stride = 2
    _same_dataset(sources.load_split(data, "val"),
                  load_ytvis(str(manual / "valid.json"), str(manual / "valid" / "JPEGImages")))


def _main(*args):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow(60)
def test_train_and_evaluate_from_tfds_equal_the_original_files(built):
    """`train` from the TFDS source, evaluating it at its step (the recorded config), then
    `evaluate` of that checkpoint on the original files: the same results.json."""
    base, raw, name, data_dir = built
    workdir = base / "work"
    _main("train", "--config", "configs/toy.py", "--workdir", str(workdir), *SMALL,
          "--config.data.dataset=tfds", f"--config.data.root={base / 'export_e2e'}",
          f"--config.data.tfds_name={name}", f"--config.data.tfds_data_dir={data_dir}",
          f"--config.data.tfds_manual_dir={raw}", "--config.train.num_steps=1",
          "--config.train.checkpoint_every=1", "--config.train.eval_every_steps=1")
    _main("evaluate", "--workdir", str(workdir), "--config.data.dataset=ytvis19",  # the files
          f"--config.data.root={raw}", "--output", str(workdir / "eval_raw"))
    from_tfds = json.loads((workdir / "eval" / "step_1" / "results.json").read_text())
    from_files = json.loads((workdir / "eval_raw" / "results.json").read_text())
    assert from_tfds and from_tfds == from_files
    valid = json.loads((base / "raw" / "valid.json").read_text())
    assert {entry["video_id"] for entry in from_tfds} <= {v["id"] for v in valid["videos"]}
    metrics = [json.loads((workdir / folder / "metrics.json").read_text())
               for folder in ("eval/step_1", "eval_raw")]
    assert {k: v for k, v in metrics[0].items() if k != "run"} == {
        k: v for k, v in metrics[1].items() if k != "run"}
