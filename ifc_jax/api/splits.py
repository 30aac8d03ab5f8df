"""Local validation: `split_annotations` carves a held-out labelled split out of a
YouTube-VIS / OVIS training JSON, by video, so a model can be scored without the server.

The official valid / test files have no annotations (they are scored on CodaLab only), so the
only labelled videos a user has are the training ones. Holding out whole videos (never frames
or tracks of a video) keeps the two splits independent: no object seen in training is
evaluated. The frame folder is shared: both outputs keep the `file_names` as they are.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ifc_jax import storage
from ifc_jax.io import UserError, atomic_writer, check_write_target, read_json


def _same_file(first: str, second: str) -> bool:
    """Whether two paths name the same file (URLs: the same string)."""
    if storage.is_url(first) or storage.is_url(second):
        return first == second
    return os.path.realpath(first) == os.path.realpath(second)


def held_out_count(num_videos: int, *, fraction: float | None = None,
                   count: int | None = None) -> int:
    """How many of `num_videos` videos go to the held-out split: `count`, or
    round(`fraction` x num_videos) but at least 1; both splits must keep a video."""
    if (fraction is None) == (count is None):
        raise UserError("give one of --fraction and --count")
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise UserError(f"--fraction: must be between 0 and 1 (exclusive), got {fraction}")
        count = max(1, round(fraction * num_videos))
        if count >= num_videos:
            raise UserError(f"--fraction {fraction}: holds out all {num_videos} videos; "
                            "the training split would be empty (use a smaller fraction)")
        return count
    if not 1 <= count < num_videos:
        raise UserError(f"--count: must be from 1 to {num_videos - 1} (the file has "
                        f"{num_videos} videos and both splits need one), got {count}")
    return count


def choose_held_out(video_ids: list[int], held_out: int, seed: int) -> set[int]:
    """The ids of the `held_out` videos: the ids sorted, shuffled by
    `np.random.default_rng(seed).permutation`, the first `held_out` taken. Sorting first makes
    the choice depend only on the set of videos and the seed, not on the file's order."""
    ordered = sorted(video_ids)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[index] for index in permutation[:held_out]}


def _subset(content: dict[str, Any], video_ids: set[int]) -> dict[str, Any]:
    """`content` with only the videos in `video_ids` and their annotations, in file order;
    every other key (categories, info, licenses, ...) kept as it is."""
    subset = dict(content)
    subset["videos"] = [video for video in content["videos"] if video["id"] in video_ids]
    subset["annotations"] = [annotation for annotation in content["annotations"]
                             if annotation["video_id"] in video_ids]
    return subset


def _write_json(path: str, content: dict[str, Any]) -> None:
    """Compact JSON, as the official files are, written atomically."""
    with atomic_writer(path, "w") as stream:
        json.dump(content, stream, separators=(",", ":"))


def split_annotations(annotations: str, train_out: str, val_out: str, *,
                      fraction: float | None = None, count: int | None = None,
                      seed: int = 0) -> dict[str, Any]:
    """Splits the labelled YouTube-VIS / OVIS file `annotations` by video into `train_out`
    (the rest) and `val_out` (held out: `count` videos, or round(`fraction` x videos), at
    least 1, chosen by `choose_held_out` with `seed`).

    Both outputs keep every top-level key of the input (categories, info, licenses, ...) with
    only their videos and those videos' annotations, in the input's order; `file_names` are
    unchanged, so the input's frame folder serves both. The file is validated as `train`
    would read it (`ifc_jax.data.ytvis.parse_ytvis`, without looking at frames). Targets are
    checked before the file is read; neither may be the input, nor each other; each is
    written atomically. Bad input is a UserError naming the file or flag.

    Returns {"source", "seed", "videos", "train": {"path", "videos", "annotations"},
    "val": {...}}.
    """
    from ifc_jax.data.ytvis import has_ground_truth, parse_ytvis

    for flag, path in (("--train-out", train_out), ("--val-out", val_out)):
        if _same_file(path, annotations):
            raise UserError(f"{path}: {flag} is the input file --annotations; refusing to "
                            "overwrite it (give another name)")
        check_write_target(path, flag, folder=False)
    if _same_file(train_out, val_out):
        raise UserError(f"{val_out}: --train-out and --val-out are the same file")
    if fraction is not None and not 0.0 < fraction < 1.0:  # before reading a large file
        raise UserError(f"--fraction: must be between 0 and 1 (exclusive), got {fraction}")
    if count is not None and count < 1:
        raise UserError(f"--count: must be at least 1, got {count}")
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise UserError(f"--seed: must be a non-negative integer, got {seed}")

    content = read_json(annotations, "YouTube-VIS annotation file")
    # The reader's validation (video entries, ids, annotations of known videos and
    # categories, per-frame lists): a file that splits cleanly also trains.
    dataset = parse_ytvis(content, annotations, "", check_frame_files=False)
    if len(dataset.videos) < 2:
        raise UserError(f"{annotations}: has {len(dataset.videos) or 'no'} video"
                        f"{'' if len(dataset.videos) == 1 else 's'}; both splits need one")
    if not has_ground_truth(content):
        raise UserError(f"{annotations}: has no annotations (a test split); split a labelled "
                        "training file")
    video_ids = [video.video_id for video in dataset.videos]
    held_out = held_out_count(len(video_ids), fraction=fraction, count=count)
    val_ids = choose_held_out(video_ids, held_out, seed)
    parts = {"train": _subset(content, set(video_ids) - val_ids),
             "val": _subset(content, val_ids)}
    for name, part in parts.items():
        if not part["annotations"]:
            # An unlabelled part would read as a test split: nothing to train on or score.
            raise UserError(f"{annotations}: the {len(part['videos'])} videos chosen for "
                            f"--{name}-out (seed {seed}) have no annotations; choose another "
                            "--seed or a larger --fraction / --count")
    _write_json(val_out, parts["val"])
    _write_json(train_out, parts["train"])
    return {"source": annotations, "seed": seed, "videos": len(video_ids),
            **{name: {"path": path, "videos": len(parts[name]["videos"]),
                      "annotations": len(parts[name]["annotations"])}
               for name, path in (("train", train_out), ("val", val_out))}}
