"""`split`: a held-out labelled split carved out of a training JSON by video (seeded), and
one-line errors for bad input."""

from __future__ import annotations

import json
import os

import pytest

from ifc_jax import cli
from ifc_jax.api.splits import choose_held_out, held_out_count, split_annotations
from ifc_jax.data.ytvis import load_ytvis
from ifc_jax.io import UserError

NUM_VIDEOS = 10


def training_json(num_videos: int = NUM_VIDEOS) -> dict:
    """A small labelled YouTube-VIS file: video v (ids 11, 12, ...) has 2 frames and
    (v % 3) + 1 tracks; uncompressed-RLE masks, extra top-level keys kept by `split`."""
    videos, annotations = [], []
    for index in range(num_videos):
        video_id = 11 + index
        videos.append({"id": video_id, "height": 4, "width": 6, "length": 2,
                       "file_names": [f"vid{video_id}/00000.jpg", f"vid{video_id}/00005.jpg"]})
        for _ in range(index % 3 + 1):
            annotations.append({
                "id": len(annotations) + 1, "video_id": video_id,
                "category_id": 1 + len(annotations) % 2, "iscrowd": 0,
                "segmentations": [{"size": [4, 6], "counts": [0, 24]}, None],
                "areas": [24, None], "bboxes": [[0, 0, 6, 4], None]})
    return {"info": {"description": "test"}, "licenses": [{"id": 1}],
            "videos": videos, "annotations": annotations,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}


def write(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def read(path) -> dict:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_split_by_video_keeps_everything_else(tmp_path, capsys):
    content = training_json()
    source = write(tmp_path / "train.json", content)
    before = (tmp_path / "train.json").read_bytes()
    train_out, val_out = str(tmp_path / "train_sub.json"), str(tmp_path / "val_sub.json")
    code, out, err = run_cli(capsys, "split", "--annotations", source, "--fraction", "0.3",
                             "--seed", "0", "--train-out", train_out, "--val-out", val_out)
    assert code == 0, err
    assert "held out 3 of 10 videos" in out and val_out in out and train_out in out
    assert (tmp_path / "train.json").read_bytes() == before  # the input is not modified
    train, val = read(train_out), read(val_out)
    train_ids = [video["id"] for video in train["videos"]]
    val_ids = [video["id"] for video in val["videos"]]
    assert len(val_ids) == 3 and len(train_ids) == 7
    assert sorted(train_ids + val_ids) == [video["id"] for video in content["videos"]]
    assert train_ids == sorted(train_ids) and val_ids == sorted(val_ids)  # input order kept
    for part, ids in ((train, train_ids), (val, val_ids)):
        # Whole videos with all their annotations, entries unchanged (file_names included:
        # the training frame folder serves both files); the other keys as they were.
        assert part["videos"] == [v for v in content["videos"] if v["id"] in ids]
        assert part["annotations"] == [a for a in content["annotations"]
                                       if a["video_id"] in ids]
        for key in ("categories", "info", "licenses"):
            assert part[key] == content[key]
    assert len(train["annotations"]) + len(val["annotations"]) == len(content["annotations"])


def test_outputs_load_with_the_training_frame_folder(tmp_path):
    content = training_json()
    frames = tmp_path / "train" / "JPEGImages"
    for video in content["videos"]:
        for name in video["file_names"]:
            (frames / name).parent.mkdir(parents=True, exist_ok=True)
            (frames / name).write_bytes(b"")  # the frame check only stats the files
    source = write(tmp_path / "train.json", content)
    summary = split_annotations(source, str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                count=4, seed=3)
    assert summary["val"]["videos"] == 4 and summary["train"]["videos"] == 6
    for name in ("a.json", "b.json"):
        dataset = load_ytvis(str(tmp_path / name), str(frames))
        assert dataset.has_annotations and dataset.categories.names == ("cat", "dog")
    assert summary["train"]["annotations"] + summary["val"]["annotations"] == len(
        content["annotations"])


def test_the_choice_depends_on_seed_and_videos_only(tmp_path):
    content = training_json()
    source = write(tmp_path / "train.json", content)

    def held_out(seed, path=source):
        split_annotations(path, str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                          fraction=0.3, seed=seed)
        return [video["id"] for video in read(tmp_path / "b.json")["videos"]]

    first = held_out(0)
    assert held_out(0) == first  # reproducible
    assert any(held_out(seed) != first for seed in range(1, 5))
    shuffled = dict(content, videos=content["videos"][::-1])
    reversed_file = write(tmp_path / "reversed.json", shuffled)
    assert sorted(held_out(0, reversed_file)) == sorted(first)  # not the file's order
    assert choose_held_out(list(range(20, 0, -1)), 5, 7) == choose_held_out(
        list(range(1, 21)), 5, 7)


def test_held_out_count():
    assert held_out_count(10, fraction=0.1) == 1
    assert held_out_count(10, fraction=0.01) == 1  # at least one video
    assert held_out_count(3471, fraction=0.1) == 347
    assert held_out_count(10, count=9) == 9
    for kwargs, needle in (({"fraction": 0.97}, "--fraction 0.97: holds out all 10"),
                           ({"count": 10}, "--count: must be from 1 to 9"),
                           ({"count": 0}, "--count"),
                           ({}, "one of --fraction and --count"),
                           ({"fraction": 0.5, "count": 2}, "one of --fraction and --count")):
        with pytest.raises(UserError, match=needle):
            held_out_count(10, **kwargs)


def test_bad_input_gives_one_error_line(tmp_path, capsys):
    good = write(tmp_path / "train.json", training_json())
    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": [')
    no_videos = write(tmp_path / "no_videos.json", dict(training_json(), videos=[],
                                                        annotations=[]))
    one_video = write(tmp_path / "one.json", training_json(1))
    test_split = write(tmp_path / "test_split.json",
                       {k: v for k, v in training_json().items() if k != "annotations"})
    unlabelled_pick = training_json()
    (picked,) = choose_held_out([v["id"] for v in unlabelled_pick["videos"]], 1, 0)
    unlabelled_pick["annotations"] = [a for a in unlabelled_pick["annotations"]
                                      if a["video_id"] != picked]
    unlabelled = write(tmp_path / "unlabelled.json", unlabelled_pick)
    bad_annotation = training_json()
    bad_annotation["annotations"][0]["video_id"] = 99
    bad_reference = write(tmp_path / "bad_reference.json", bad_annotation)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    train_out, val_out = str(tmp_path / "t.json"), str(tmp_path / "v.json")
    outputs = ["--train-out", train_out, "--val-out", val_out]
    cases = [
        (["--annotations", str(tmp_path / "none.json"), "--count", "1", *outputs],
         ["none.json", "not found"]),
        (["--annotations", str(broken), "--count", "1", *outputs],
         [str(broken), "malformed JSON"]),
        (["--annotations", no_videos, "--count", "1", *outputs], [no_videos, "has no videos"]),
        (["--annotations", test_split, "--count", "1", *outputs],
         [test_split, "no annotations"]),
        (["--annotations", bad_reference, "--count", "1", *outputs],
         [bad_reference, "video_id 99"]),
        (["--annotations", one_video, "--count", "1", *outputs], [one_video, "has 1 video;"]),
        (["--annotations", good, "--fraction", "0", *outputs], ["--fraction", "got 0.0"]),
        (["--annotations", good, "--fraction", "1", *outputs], ["--fraction", "got 1.0"]),
        (["--annotations", good, "--fraction", "-0.2", *outputs], ["--fraction"]),
        (["--annotations", good, "--count", "0", *outputs], ["--count", "got 0"]),
        (["--annotations", good, "--count", "10", *outputs], ["--count", "from 1 to 9"]),
        (["--annotations", good, "--fraction", "0.1", "--count", "1", *outputs],
         ["--count", "not allowed with"]),
        (["--annotations", good, *outputs], ["--fraction", "--count", "required"]),
        (["--annotations", good, "--count", "1", "--train-out", good, "--val-out", val_out],
         [good, "--train-out", "refusing to overwrite"]),
        (["--annotations", good, "--count", "1", "--train-out", train_out,
          "--val-out", str(tmp_path / "." / "train.json")], ["--val-out", "refusing"]),
        (["--annotations", good, "--count", "1", "--train-out", train_out,
          "--val-out", train_out], ["same file"]),
        (["--annotations", good, "--count", "1", "--train-out", str(folder),
          "--val-out", val_out], [str(folder), "--train-out", "is a folder"]),
        # Write targets are checked before the input is read.
        (["--annotations", str(tmp_path / "none.json"), "--count", "1", "--train-out",
          train_out, "--val-out", str(folder)], [str(folder), "--val-out"]),
        (["--annotations", unlabelled, "--count", "1", "--seed", "0", *outputs],
         [unlabelled, "no annotations", "--seed"]),
    ]
    if os.path.isdir("/proc"):  # a file system that takes no new file, even from root
        cases.append((["--annotations", good, "--count", "1", "--train-out", train_out,
                       "--val-out", "/proc/ifc_jax_test/v.json"],
                      ["/proc/ifc_jax_test/v.json", "--val-out", "cannot be written"]))
    for argv, needles in cases:
        code, out, err = run_cli(capsys, "split", *argv)
        lines = err.strip().splitlines()
        assert code == 2 and out == "", (argv, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert all(needle in lines[0] for needle in needles), (lines[0], needles)
        assert not os.path.exists(train_out) and not os.path.exists(val_out), argv
    assert read(good) == training_json()
