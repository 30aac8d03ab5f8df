"""A TFDS `youtube_vis` build as the data source, instead of JSON + frame folders.

The TFDS example of a video (tensorflow_datasets/video/youtube_vis) holds
  video       uint8 (L, H, W, 3)             all frames of the build (maybe resized)
  metadata    {height, width, num_frames, video_name}
  tracks      per track: segmentations uint8 (n, H, W, 1) and bboxes (n, 4) normalised
              (ymin, xmin, ymax, xmax), areas (n,), frames int (n,) = the frames it is in,
              category (ClassLabel: YouTube-VIS category_id - 1), is_crowd
TFDS keeps only the n frames where a track is present; here they become the YouTube-VIS
per-frame lists again, with `null` in the frames TFDS dropped. Masks are re-encoded as
compressed RLE at the build's resolution; `areas` are recounted from those masks (TFDS scales
them by the inverse of the resize factor) and boxes come from the TFDS boxes.

Which frames are "annotated frames" (the YouTube-VIS frame list):
  * `*_only_frames_with_labels` builds store just those: `annotated_frame_stride=None`;
  * the full builds store every frame, annotated ones being every 5th: pass 5.

`export_tfds_split` writes the YouTube-VIS layout (JPEG frames + JSON) once, and the ordinary
reader takes over.
TensorFlow Datasets is imported only by `export_tfds_split`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from ifc_jax.data import masks as mask_codec
from ifc_jax.io import UserError

TFDS_SPLITS = {"train": "train", "val": "validation"}
EXPORT_MANIFEST = "tfds_export.json"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _row(values: Any, index: int) -> np.ndarray:
    """Row `index` of a per-track field: a list, a stacked array or a (TF) ragged tensor."""
    if hasattr(values, "row_splits") and hasattr(values, "values"):  # tf.RaggedTensor(Value)
        splits = np.asarray(values.row_splits)
        return np.asarray(values.values[int(splits[index]):int(splits[index + 1])])
    return np.asarray(values[index])


def _track_rows(tracks: Any) -> list[dict[str, np.ndarray]]:
    """Per-track dicts from either a list of dicts or a dict of per-track batched fields."""
    if isinstance(tracks, list | tuple):
        return [{key: np.asarray(value) for key, value in t.items()} for t in tracks]
    count = len(np.asarray(tracks["category"]))
    return [{key: _row(values, i) for key, values in tracks.items()} for i in range(count)]


def example_to_ytvis(example: Mapping[str, Any], video_id: int, *,
                     annotated_frame_stride: int | None = None,
                     first_annotation_id: int = 1) -> tuple[dict, list[dict], np.ndarray]:
    """One TFDS example -> (YouTube-VIS video entry, its track annotations, frames (L', H, W, 3)).

    L' is the number of annotated frames; file_names are '<video_name>/<index>.jpg' with the
    frame's index in the TFDS video.
    """
    all_frames = np.asarray(example["video"], dtype=np.uint8)
    name = _text(example["metadata"]["video_name"])
    height, width = all_frames.shape[1:3]
    stride = annotated_frame_stride or 1
    kept = list(range(0, all_frames.shape[0], stride))
    position = {frame: i for i, frame in enumerate(kept)}  # TFDS frame -> annotated frame
    video = {"id": int(video_id), "height": int(height), "width": int(width),
             "length": len(kept), "file_names": [f"{name}/{f:05d}.jpg" for f in kept]}
    annotations = []
    for number, track in enumerate(_track_rows(example["tracks"])):
        segmentations: list[Any] = [None] * len(kept)
        areas: list[float | None] = [None] * len(kept)
        bboxes: list[list[float] | None] = [None] * len(kept)
        frames = track["frames"].astype(np.int64).reshape(-1)
        masks = track["segmentations"].reshape(len(frames), height, width) > 0
        boxes = track["bboxes"].reshape(len(frames), 4)
        for frame, mask, (ymin, xmin, ymax, xmax) in zip(frames, masks, boxes, strict=True):
            if int(frame) not in position:
                raise UserError(f"tfds video {name}: track {number} is labelled on frame "
                                f"{frame}, not an annotated frame (stride {stride})")
            slot = position[int(frame)]
            segmentations[slot] = mask_codec.encode_rle(mask)
            areas[slot] = float(mask.sum())
            bboxes[slot] = [float(xmin * width), float(ymin * height),
                            float((xmax - xmin) * width), float((ymax - ymin) * height)]
        annotations.append({
            "id": first_annotation_id + number, "video_id": int(video_id),
            "category_id": int(track["category"]) + 1, "iscrowd": int(bool(track["is_crowd"])),
            "segmentations": segmentations, "areas": areas, "bboxes": bboxes})
    return video, annotations, all_frames[kept]


def convert_examples(examples: Iterable[Mapping[str, Any]], category_names: list[str], *,
                     annotated_frame_stride: int | None = None,
                     on_frames: Callable[[dict, np.ndarray], None] | None = None) -> dict:
    """YouTube-VIS JSON content of TFDS examples (video ids 1, 2, ... in example order).

    `on_frames(video_entry, frames)` receives each video's annotated frames (L', H, W, 3), so
    callers keep or write them without holding every video in memory here.
    """
    content = {"videos": [], "annotations": [],
               "categories": [{"id": i + 1, "name": n} for i, n in enumerate(category_names)]}
    for index, example in enumerate(examples):
        video, annotations, frames = example_to_ytvis(
            example, index + 1, annotated_frame_stride=annotated_frame_stride,
            first_annotation_id=len(content["annotations"]) + 1)
        content["videos"].append(video)
        content["annotations"].extend(annotations)
        if on_frames is not None:
            on_frames(video, frames)
    return content


def export_ytvis_layout(examples: Iterable[Mapping[str, Any]], category_names: list[str],
                        json_path: str, frames_dir: str, *,
                        annotated_frame_stride: int | None = None,
                        jpeg_quality: int = 95) -> None:
    """Writes TFDS examples as YouTube-VIS JSON + JPEG frames (JSON written last, atomically)."""

    def write_frames(video: dict, frames: np.ndarray) -> None:
        for file_name, frame in zip(video["file_names"], frames, strict=True):
            path = os.path.join(frames_dir, file_name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(frame).save(path, quality=jpeg_quality)

    content = convert_examples(examples, category_names,
                               annotated_frame_stride=annotated_frame_stride,
                               on_frames=write_frames)
    folder = os.path.dirname(os.path.abspath(json_path))
    os.makedirs(folder, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        json.dump(content, f)
    os.replace(staging, json_path)


def export_tfds_split(data_config: Any, split: str) -> None:
    """Exports `config.data.tfds_name`'s split to the YouTube-VIS layout under config.data.root.

    Skipped when already exported from the same build (a manifest records it). Needs the
    TFDS build to exist (YouTube-VIS needs a manual download, see data/README.md).
    """
    from ifc_jax.data import sources
    from ifc_jax.data.pipeline import import_tensorflow

    json_path, frames_dir = sources.split_paths(data_config, split)
    stride = data_config.tfds_frame_stride or None
    record = {"tfds_name": data_config.tfds_name, "split": TFDS_SPLITS[split],
              "annotated_frame_stride": stride}
    manifest_path = json_path + "." + EXPORT_MANIFEST
    if os.path.isfile(json_path) and os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            if json.load(f) == record:
                return
    import_tensorflow()
    import tensorflow_datasets as tfds

    data_dir = data_config.tfds_data_dir or None
    try:
        builder = tfds.builder(data_config.tfds_name, data_dir=data_dir)
        examples = tfds.as_numpy(builder.as_dataset(split=TFDS_SPLITS[split]))
    except Exception as err:  # tfds raises many types for "not built / not found"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"config.data.tfds_name={data_config.tfds_name!r}: cannot read the "
                        f"TFDS build ({reason})") from None
    names = list(builder.info.features["tracks"]["category"].names)
    shutil.rmtree(frames_dir, ignore_errors=True)
    export_ytvis_layout(examples, names, json_path, frames_dir, annotated_frame_stride=stride)
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(record, f)
