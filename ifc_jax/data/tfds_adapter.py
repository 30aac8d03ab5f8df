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

`export_tfds_split` writes the YouTube-VIS layout once and the ordinary reader takes over. The
frames are read still encoded and written as they are (a native build stores the original
JPEG files, so the export has them byte for byte; a resized build's are PNG). TFDS keeps no
video ids or frame file names: with the official JSON of the split (`tfds_manual_dir`) each
video takes its official id, file names and the official categories back, so results of the
export are those of the original files; without it, ids run 1..N in the build's order.
TensorFlow Datasets is imported only by `export_tfds_split`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from ifc_jax.data import masks as mask_codec
from ifc_jax.io import UserError, read_json

log = logging.getLogger("ifc_jax.data")

TFDS_SPLITS = {"train": "train", "val": "validation"}
# The official JSON of each split in the build's manual_dir (config.data.tfds_manual_dir).
REFERENCE_JSONS = {"train": "train.json", "val": "valid.json"}
EXPORT_MANIFEST = "tfds_export.json"
EXPORT_VERSION = 2  # 2: frames kept encoded, official ids / names / sizes from the reference


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


FRAME_SIGNATURES = {b"\xff\xd8\xff": ".jpg", b"\x89PNG\r\n\x1a\n": ".png"}


def frame_extension(frame: Any) -> str:
    """File extension of one frame: of its encoded bytes (TFDS keeps a native build's JPEG files
    as they were), or ".png" for a decoded array (written losslessly)."""
    if isinstance(frame, bytes):
        for signature, extension in FRAME_SIGNATURES.items():
            if frame.startswith(signature):
                return extension
        raise UserError(f"a TFDS frame is neither JPEG nor PNG (starts {frame[:8]!r})")
    return ".png"


def _file_names(name: str, kept: list[int], frames: Any, reference: Mapping | None) -> list[str]:
    """The exported frames' names: the reference video's (the official JSON's file names with
    the extension of the stored bytes), else '<video_name>/<TFDS frame index>'."""
    extensions = [frame_extension(frames[frame]) for frame in kept]
    if reference is None:
        return [f"{name}/{frame:05d}{ext}" for frame, ext in zip(kept, extensions, strict=True)]
    return [os.path.splitext(str(original))[0] + ext
            for original, ext in zip(reference["file_names"], extensions, strict=True)]


def _check_against_reference(name: str, num_frames: int, stride: int, kept: list[int],
                             reference: Mapping) -> None:
    """UserError when the build's frames do not line up with the official video's annotated
    frames, naming the frame stride that would (a full build read without it)."""
    expected = len(reference["file_names"])
    if len(kept) == expected:
        return
    hint = ""
    if expected and num_frames > expected:
        hint = (f"; a build with every frame (the full builds) needs "
                f"config.data.tfds_frame_stride={round(num_frames / expected)}")
    raise UserError(f"tfds video {name}: {len(kept)} frames at tfds_frame_stride {stride} but "
                    f"the reference JSON lists {expected} annotated frames{hint}")


def example_to_ytvis(example: Mapping[str, Any], video_id: int, *,
                     annotated_frame_stride: int | None = None,
                     first_annotation_id: int = 1,
                     reference: Mapping | None = None) -> tuple[dict, list[dict], list[Any]]:
    """One TFDS example -> (YouTube-VIS video entry, its track annotations, its frames).

    `example["video"]` holds either the encoded frames (TFDS's SkipDecoding: bytes, written to
    disk as they are) or decoded frames (L, H, W, 3); the returned frames are the annotated
    ones (L' of them) in the same form. `reference`: the official JSON's entry of this video
    (matched by name): its id and file names are kept (the size is the build's: the
    official one for a native build). Without it the video gets `video_id` and file names
    '<video_name>/<index in the TFDS video>'.
    """
    all_frames = example["video"]
    name = _text(example["metadata"]["video_name"])
    height = int(example["metadata"]["height"])
    width = int(example["metadata"]["width"])
    num_frames = len(all_frames)
    stride = annotated_frame_stride or 1
    kept = list(range(0, num_frames, stride))
    if reference is not None:
        _check_against_reference(name, num_frames, stride, kept, reference)
        video_id = int(reference["id"])
    position = {frame: i for i, frame in enumerate(kept)}  # TFDS frame -> annotated frame
    video = {"id": int(video_id), "height": height, "width": width, "length": len(kept),
             "file_names": _file_names(name, kept, all_frames, reference)}
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
    return video, annotations, [all_frames[frame] for frame in kept]


def _labelled_frame_step(content: dict) -> int:
    """The largest step that every labelled frame index is a multiple of, for an export named
    by TFDS frame index ('<video>/<index>.<ext>'); 0 when fewer than 8 labelled frames past
    the first exist (too few to tell)."""
    names = {video["id"]: video["file_names"] for video in content["videos"]}
    labelled = {int(os.path.splitext(os.path.basename(names[annotation["video_id"]][slot]))[0])
                for annotation in content["annotations"]
                for slot, segmentation in enumerate(annotation["segmentations"])
                if segmentation is not None}
    nonzero = sorted(index for index in labelled if index)
    return math.gcd(*nonzero) if len(nonzero) >= 8 else 0


def convert_examples(examples: Iterable[Mapping[str, Any]], category_names: list[str], *,
                     annotated_frame_stride: int | None = None,
                     reference: Mapping | None = None,
                     on_frames: Callable[[dict, list[Any]], None] | None = None) -> dict:
    """YouTube-VIS JSON content of TFDS examples.

    Without `reference` (the official JSON content of the split) videos get ids 1, 2, ... in
    example order and the categories are the build's names with ids 1..K; with it, each video
    takes its official id, file names and size and the categories are the official ones.
    `on_frames(video_entry, frames)` receives each video's annotated frames, so callers write
    them without holding every video in memory here.
    """
    references = None
    if reference is not None:
        references = {os.path.dirname(str(v["file_names"][0])): v for v in reference["videos"]}
        categories = list(reference.get("categories") or [])
    else:
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(category_names)]
    content = {"videos": [], "annotations": [], "categories": categories}
    for index, example in enumerate(examples):
        official = None
        if references is not None:
            name = _text(example["metadata"]["video_name"])
            official = references.get(name)
            if official is None:
                raise UserError(f"tfds video {name}: not in the reference JSON's videos")
        video, annotations, frames = example_to_ytvis(
            example, index + 1, annotated_frame_stride=annotated_frame_stride,
            first_annotation_id=len(content["annotations"]) + 1, reference=official)
        content["videos"].append(video)
        content["annotations"].extend(annotations)
        if on_frames is not None:
            on_frames(video, frames)
    if reference is not None:  # the official order, as the official files list them
        order = {int(v["id"]): i for i, v in enumerate(reference["videos"])}
        content["videos"].sort(key=lambda v: order[v["id"]])
    return content


def export_ytvis_layout(examples: Iterable[Mapping[str, Any]], category_names: list[str],
                        json_path: str, frames_dir: str, *,
                        annotated_frame_stride: int | None = None,
                        reference: Mapping | None = None) -> dict:
    """Writes TFDS examples as YouTube-VIS JSON + frame files (encoded frames byte for byte,
    decoded ones as PNG; the JSON written last, atomically). Returns the JSON content."""

    def write_frames(video: dict, frames: list[Any]) -> None:
        for file_name, frame in zip(video["file_names"], frames, strict=True):
            path = os.path.join(frames_dir, file_name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if isinstance(frame, bytes):
                with open(path, "wb") as stream:
                    stream.write(frame)
            else:
                Image.fromarray(np.asarray(frame, np.uint8)).save(path)

    content = convert_examples(examples, category_names,
                               annotated_frame_stride=annotated_frame_stride,
                               reference=reference, on_frames=write_frames)
    folder = os.path.dirname(os.path.abspath(json_path))
    os.makedirs(folder, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        json.dump(content, f)
    os.replace(staging, json_path)
    return content


def _reference_content(data_config: Any, split: str) -> dict | None:
    """The official JSON of `split` from `config.data.tfds_manual_dir`, or None without one."""
    folder = data_config.tfds_manual_dir
    if not folder:
        return None
    path = os.path.join(folder, REFERENCE_JSONS[split])
    content = read_json(path, "YouTube-VIS annotation file (config.data.tfds_manual_dir)")
    if not isinstance(content, dict) or not isinstance(content.get("videos"), list):
        raise UserError(f"{path}: not a YouTube-VIS file (no 'videos' list)")
    return content


def export_tfds_split(data_config: Any, split: str) -> None:
    """Exports `config.data.tfds_name`'s split to the YouTube-VIS layout under config.data.root.

    Skipped when already exported from the same build with the same settings (a manifest
    records them). Needs the TFDS build to exist (YouTube-VIS needs a manual download and a
    separate build environment, see data/README.md#tfds).
    """
    from ifc_jax.data import sources
    from ifc_jax.data.pipeline import import_tensorflow

    json_path, frames_dir = sources.split_paths(data_config, split)
    stride = data_config.tfds_frame_stride or None
    record = {"tfds_name": data_config.tfds_name, "split": TFDS_SPLITS[split],
              "annotated_frame_stride": stride, "manual_dir": data_config.tfds_manual_dir,
              "export_version": EXPORT_VERSION}
    manifest_path = json_path + "." + EXPORT_MANIFEST
    if os.path.isfile(json_path) and os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            if json.load(f) == record:
                return
    reference = _reference_content(data_config, split)
    import_tensorflow()
    import tensorflow_datasets as tfds

    data_dir = data_config.tfds_data_dir or None
    try:
        builder = tfds.builder(data_config.tfds_name, data_dir=data_dir)
        # The frames stay encoded: a native build's JPEG files come back byte for byte.
        examples = tfds.as_numpy(builder.as_dataset(
            split=TFDS_SPLITS[split], decoders={"video": tfds.decode.SkipDecoding()}))
    except Exception as err:  # tfds raises many types for "not built / not found"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"config.data.tfds_name={data_config.tfds_name!r}: cannot read the "
                        f"TFDS build ({reason})") from None
    names = list(builder.info.features["tracks"]["category"].names)
    log.info("exporting TFDS %s split %s to %s", data_config.tfds_name, TFDS_SPLITS[split],
             json_path)
    shutil.rmtree(frames_dir, ignore_errors=True)
    content = export_ytvis_layout(examples, names, json_path, frames_dir,
                                  annotated_frame_stride=stride, reference=reference)
    _warn_about_the_export(content, data_config, stride, reference)
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(record, f)


def _warn_about_the_export(content: dict, data_config: Any, stride: int | None,
                           reference: dict | None) -> None:
    """Warnings for an export that trains or scores wrongly without an error."""
    step = _labelled_frame_step(content) if stride is None and reference is None else 0
    if step > 1:
        log.warning("%s: every labelled frame of the build is a multiple of %d: a build with "
                    "every frame (a full build)? Objects are absent from the frames in "
                    "between; set config.data.tfds_frame_stride=%d", data_config.tfds_name,
                    step, step)
    if reference is not None:
        official = {int(v["id"]): (v.get("height"), v.get("width")) for v in reference["videos"]}
        resized = sum(official.get(v["id"]) != (v["height"], v["width"])
                      for v in content["videos"])
        if resized:
            log.warning("%s: %d videos are not at their official size (a resized build): "
                        "they train, but results made from them are at the build's size and "
                        "cannot be submitted", data_config.tfds_name, resized)
    else:
        log.warning("%s exported without config.data.tfds_manual_dir: the videos are numbered "
                    "1..%d in the build's order, not with their official ids, so a "
                    "results.json made from it cannot be submitted (set tfds_manual_dir to the "
                    "folder of the official train.json / valid.json)", data_config.tfds_name,
                    len(content["videos"]))
