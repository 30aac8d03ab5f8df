"""Reader for YouTube-VIS 2019 / 2021 and OVIS annotation files and their JPEG frame folders.

Layout (see data/README.md): one JSON with
  videos:      [{id, file_names: [L paths relative to the frame folder], height, width, length}]
  categories:  [{id, name, ...}]
  annotations: [{id, video_id, category_id, iscrowd, segmentations: [L entries], areas: [L],
                 bboxes: [L], occlusion (OVIS, optional)}]       -- one entry per TRACK
and a folder of frames. Splits without annotations (official valid / test: the key missing,
null or an empty list, see `has_ground_truth`) load for inference.

Everything is validated here, before any tf.data pipeline runs, so bad input fails with one
`UserError` line naming the file and the video. No TensorFlow in this module.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ifc_jax import storage
from ifc_jax.data import masks as mask_codec
from ifc_jax.io import UserError, read_json


@dataclasses.dataclass(frozen=True)
class CategoryMap:
    """Dataset category ids <-> contiguous class indices 0..K-1 (sorted by id)."""

    dataset_ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        index = {cid: i for i, cid in enumerate(self.dataset_ids)}
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_categories(cls, categories: list[dict]) -> CategoryMap:
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in ordered),
                   tuple(str(c.get("name", c["id"])) for c in ordered))

    @property
    def num_classes(self) -> int:
        return len(self.dataset_ids)

    def to_contiguous(self, category_id: int) -> int:
        """Dataset id (e.g. 1..40) -> class index (0..K-1). KeyError if unknown."""
        return self._index[int(category_id)]

    def to_dataset_id(self, index: int) -> int:
        """Class index 0..K-1 -> dataset category id (what results.json needs)."""
        return self.dataset_ids[int(index)]


@dataclasses.dataclass(frozen=True)
class Track:
    """One annotated object through a video. Lists have one entry per frame of the video."""

    track_id: int
    category_id: int  # as in the dataset
    label: int  # contiguous class index
    iscrowd: bool
    segmentations: tuple[Any, ...]  # raw per-frame encodings; None where absent
    areas: tuple[float | None, ...] | None = None
    bboxes: tuple[Any, ...] | None = None
    occlusion: tuple[Any, ...] | None = None  # OVIS only

    def present_frames(self) -> np.ndarray:
        """Indices of the frames with a (non-null) segmentation, int (n,)."""
        return np.array([t for t, s in enumerate(self.segmentations)
                         if not mask_codec.is_absent(s)], dtype=np.int64)

    def mask(self, frame: int, height: int, width: int) -> np.ndarray | None:
        """Decoded bool mask (height, width) in `frame`, or None when absent."""
        return mask_codec.decode_segmentation(self.segmentations[frame], height, width)


@dataclasses.dataclass(frozen=True)
class Video:
    """A video of the index. `frames` is set instead of `frame_paths` for in-memory sources."""

    video_id: int
    height: int
    width: int
    file_names: tuple[str, ...]
    frame_paths: tuple[str, ...]
    tracks: tuple[Track, ...] = ()
    frames: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def length(self) -> int:
        return len(self.file_names)

    @property
    def name(self) -> str:
        """The folder name of the frames (YouTube-VIS video name); an image's file name for
        the one-frame videos of a COCO file."""
        if not self.file_names:
            return str(self.video_id)
        return os.path.dirname(self.file_names[0]) or self.file_names[0]


@dataclasses.dataclass(frozen=True)
class YtvisDataset:
    """A parsed, validated split: its videos, tracks and categories."""

    json_path: str
    frames_dir: str
    videos: tuple[Video, ...]
    categories: CategoryMap
    has_annotations: bool  # has_ground_truth: False for a test split (nothing to score)
    # "ytvis": a YouTube-VIS / OVIS file; "coco": a COCO image file, each image a one-frame
    # video (data/coco.py), written and scored as COCO detections.
    annotation_format: str = "ytvis"

    def video_by_id(self, video_id: int) -> Video:
        for video in self.videos:
            if video.video_id == video_id:
                return video
        raise KeyError(video_id)

    def describe(self, video: Video) -> str:
        """'video 3 (name) in train.json', for error messages."""
        return f"video {video.video_id} ({video.name}) in {self.json_path}"


def has_ground_truth(content: Any) -> bool:
    """Whether a YouTube-VIS / OVIS split (its parsed JSON) has ground truth: at least one
    entry in `annotations`.

    The one rule for a test split, shared by loading (`YtvisDataset.has_annotations`),
    `evaluate` and `score`: a missing `annotations` key, `"annotations": null` and
    `"annotations": []` all mean "no ground truth" (the official valid / test files leave the
    key out; converters and hand-edited files write the other two), so `evaluate` writes
    results.json for the server and no metrics, `score` refuses the file, and `train` refuses
    it. Scoring an empty ground truth would only give -1 everywhere.
    """
    return isinstance(content, dict) and bool(content.get("annotations"))


def load_ytvis(json_path: str, frames_dir: str, *, check_frame_files: bool = True) -> YtvisDataset:
    """Reads and validates a YouTube-VIS / OVIS split.

    Args:
      json_path: the annotation JSON (train.json, valid.json, annotations_train.json, ...).
      frames_dir: folder the `file_names` are relative to (e.g. `train/JPEGImages`).
      check_frame_files: stat every frame file now, so a missing one is reported before
        training starts (cheap: one stat per annotated frame).
    """
    return parse_ytvis(read_annotation_file(json_path, "YouTube-VIS annotation file"),
                       json_path, frames_dir, check_frame_files=check_frame_files)


def read_annotation_file(json_path: str, what: str) -> Any:
    """The parsed content of a dataset's annotation JSON (`what` names the kind of file); a
    missing file is a UserError that says where datasets go, the usual mistake."""
    if not storage.isfile(json_path):
        raise UserError(f"{json_path}: annotation file not found "
                        "(data/README.md: where datasets go)")
    return read_json(json_path, what)


def parse_ytvis(content: Any, json_path: str, frames_dir: str, *,
                check_frame_files: bool = True) -> YtvisDataset:
    """Validates already-loaded JSON content (see `load_ytvis`)."""
    where = json_path

    def fail(message: str) -> UserError:
        return UserError(f"{where}: {message}")

    if not isinstance(content, dict) or not isinstance(content.get("videos"), list):
        raise fail("not a YouTube-VIS file: expected an object with a 'videos' list")
    category_map = parse_categories(content, fail)
    known_categories = set(category_map.dataset_ids)

    raw_videos = index_by_id(content, "videos", _check_video_entry, fail)

    annotations = annotation_list(content, fail)
    tracks_by_video: dict[int, list[Track]] = {vid: [] for vid in raw_videos}
    for position, annotation in enumerate(annotations):
        track = _parse_track(annotation, position, raw_videos, known_categories,
                             category_map, fail)
        tracks_by_video[annotation["video_id"]].append(track)

    videos = []
    for video_id, raw in raw_videos.items():
        file_names = tuple(str(f) for f in raw["file_names"])
        paths = tuple(storage.join(frames_dir, f) for f in file_names)
        videos.append(Video(video_id=video_id, height=int(raw["height"]),
                            width=int(raw["width"]), file_names=file_names, frame_paths=paths,
                            tracks=tuple(tracks_by_video[video_id])))
    if check_frame_files:
        check_files_exist(videos, json_path)
    return YtvisDataset(json_path=json_path, frames_dir=frames_dir, videos=tuple(videos),
                        categories=category_map, has_annotations=has_ground_truth(content))


def parse_categories(content: dict, fail: Callable[[str], UserError]) -> CategoryMap:
    """The `categories` of a YouTube-VIS or COCO file: a list of objects with distinct integer
    ids. `fail(message)` makes the error that names the file."""
    categories = content.get("categories", [])
    if not isinstance(categories, list) or not all(
            isinstance(c, dict) and isinstance(c.get("id"), int) for c in categories):
        raise fail("'categories' must be a list of objects with an integer 'id'")
    category_map = CategoryMap.from_categories(categories)
    if len(set(category_map.dataset_ids)) != category_map.num_classes:
        raise fail("'categories' has duplicate ids")
    return category_map


def index_by_id(content: dict, key: str, check_entry: Callable[..., None],
                fail: Callable[[str], UserError]) -> dict[int, dict]:
    """The entries of `content[key]` ("videos", "images") by id, each checked by
    `check_entry(entry, position, fail)` first; an id given twice is an error."""
    index: dict[int, dict] = {}
    for position, entry in enumerate(content[key]):
        check_entry(entry, position, fail)
        if entry["id"] in index:
            raise fail(f"{key[:-1]} id {entry['id']} appears twice in '{key}'")
        index[entry["id"]] = entry
    return index


def annotation_parent(annotation: Any, position: int, parents: dict[int, dict],
                      parent_key: str, required: Sequence[str],
                      fail: Callable[[str], UserError]) -> tuple[str, dict, int]:
    """("annotation N", the entry it belongs to, N) of `annotations[position]`, checked: an
    object with `parent_key` ("video_id", "image_id") naming an entry of `parents` and the
    `required` keys."""
    if not isinstance(annotation, dict):
        raise fail(f"annotations[{position}] is not an object")
    annotation_id = annotation.get("id", position + 1)
    label = f"annotation {annotation_id}"
    for key in (parent_key, *required):
        if key not in annotation:
            raise fail(f"{label} has no '{key}'")
    parent = parents.get(annotation[parent_key])
    if parent is None:
        raise fail(f"{label}: {parent_key} {annotation[parent_key]} is not in "
                   f"'{parent_key.removesuffix('_id')}s'")
    return label, parent, annotation_id


def annotation_list(content: dict, fail: Callable[[str], UserError]) -> list:
    """The `annotations` of a YouTube-VIS or COCO file; [] when missing or null."""
    annotations = content.get("annotations")
    if annotations is not None and not isinstance(annotations, list):
        raise fail("'annotations' must be a list")
    return annotations or []


def check_files_exist(videos: Sequence[Video], json_path: str) -> None:
    """UserError naming the first frame file (in video order) that does not exist.

    Local files: one stat each. Cloud storage: one listing per frame folder (a stat per frame
    would be tens of thousands of requests for YouTube-VIS), on a few threads.
    """
    paths = [path for video in videos for path in video.frame_paths]
    if paths and storage.is_url(paths[0]):
        import concurrent.futures

        folders = sorted({storage.dirname(path) for path in paths})
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            listings = dict(zip(folders, pool.map(storage.listdir, folders), strict=True))
        present = {storage.join(folder, name) for folder, names in listings.items()
                   for name in names}
        exists = present.__contains__
    else:
        exists = os.path.isfile
    for video in videos:
        for path in video.frame_paths:
            if not exists(path):
                raise UserError(f"{path}: frame file not found (video {video.video_id} "
                                f"({video.name}) in {json_path})")


def _check_video_entry(video: Any, position: int, fail) -> None:
    if not isinstance(video, dict):
        raise fail(f"videos[{position}] is not an object")
    for key in ("id", "file_names", "height", "width"):
        if key not in video:
            raise fail(f"videos[{position}] (id {video.get('id')}) has no '{key}'")
    label = f"video {video['id']}"
    if not isinstance(video["file_names"], list) or not video["file_names"]:
        raise fail(f"{label}: 'file_names' must be a non-empty list")
    if not all(isinstance(v, int) and v > 0 for v in (video["height"], video["width"])):
        raise fail(f"{label}: 'height' and 'width' must be positive integers")
    length = video.get("length", len(video["file_names"]))
    if length != len(video["file_names"]):
        raise fail(f"{label}: 'length' is {length} but 'file_names' lists "
                   f"{len(video['file_names'])} frames")


def _parse_track(annotation: Any, position: int, raw_videos: dict[int, dict],
                 known_categories: set[int], category_map: CategoryMap, fail) -> Track:
    label, video, track_id = annotation_parent(
        annotation, position, raw_videos, "video_id", ("category_id", "segmentations"), fail)
    name = os.path.dirname(str(video["file_names"][0]))
    label = f"{label} (video {video['id']} ({name}))"
    if annotation["category_id"] not in known_categories:
        raise fail(f"{label}: unknown category_id {annotation['category_id']} "
                   f"(known: {sorted(known_categories)})")
    length = len(video["file_names"])
    segmentations = annotation["segmentations"]
    if not isinstance(segmentations, list) or len(segmentations) != length:
        count = len(segmentations) if isinstance(segmentations, list) else "no list of"
        raise fail(f"{label}: 'segmentations' has {count} entries but the video has "
                   f"{length} frames")
    for frame, segmentation in enumerate(segmentations):
        try:
            mask_codec.check_segmentation(segmentation, video["height"], video["width"])
        except mask_codec.SegmentationFormatError as err:
            raise fail(f"{label}, frame {frame} ({video['file_names'][frame]}): "
                       f"{err}") from None
    optional = {}
    for key in ("areas", "bboxes", "occlusion"):
        values = annotation.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != length:
            raise fail(f"{label}: '{key}' must have one entry per frame ({length})")
        optional[key] = tuple(values)
    return Track(track_id=int(track_id), category_id=int(annotation["category_id"]),
                 label=category_map.to_contiguous(annotation["category_id"]),
                 iscrowd=bool(annotation.get("iscrowd", 0)),
                 segmentations=tuple(segmentations), **optional)
