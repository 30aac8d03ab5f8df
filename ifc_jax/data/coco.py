"""Reader for COCO instance-segmentation files: every image a one-frame video.

Layout (data/README.md#coco): one JSON per split with
  images:      [{id, file_name (relative to the image folder), height, width}]
  categories:  [{id, name, ...}]        -- COCO's 80 ids run 1..90 with gaps
  annotations: [{id, image_id, category_id, segmentation, iscrowd, area, bbox}]
and a folder of images. `segmentation` is polygons, a compressed RLE or an uncompressed RLE
(COCO's crowd regions), decoded by pycocotools as its COCO API decodes them, except that
polygons of fewer than three points are skipped as detectron2's COCO loader skips them.

The images are returned as a `YtvisDataset` of one-frame videos (video id = image id, one
one-frame track per annotation), so COCO pre-training runs through the same clip pipeline
with T = 1 (configs/ifc_r50_coco.py) and evaluation through the same inference, with
`annotation_format = "coco"` telling `evaluate` to write COCO detections and score them
with pycocotools' COCOeval. Crowd annotations are kept as crowd tracks: like detectron2's
mapper, training gives them no target (`clips.clip_targets`); COCOeval treats them as
regions that neither match nor penalise a detection. Files without annotations (COCO's
image_info_test-dev2017.json) load for inference. No TensorFlow in this module.
"""

from __future__ import annotations

from typing import Any

from ifc_jax import storage
from ifc_jax.data import masks as mask_codec
from ifc_jax.data.ytvis import (
    CategoryMap,
    Track,
    Video,
    YtvisDataset,
    annotation_list,
    annotation_parent,
    check_files_exist,
    index_by_id,
    parse_categories,
    read_annotation_file,
)
from ifc_jax.io import UserError

ANNOTATION_FORMAT = "coco"


def is_coco(content: Any) -> bool:
    """Whether parsed JSON content is a COCO image file (an 'images' list, no 'videos')."""
    return (isinstance(content, dict) and isinstance(content.get("images"), list)
            and "videos" not in content)


def load_coco(json_path: str, images_dir: str, *, check_files: bool = True) -> YtvisDataset:
    """Reads and validates a COCO split (e.g. annotations/instances_train2017.json with
    train2017/). `check_files`: stat every image now, so a missing one fails before training."""
    return parse_coco(read_annotation_file(json_path, "COCO annotation file"), json_path,
                      images_dir, check_files=check_files)


def parse_coco(content: Any, json_path: str, images_dir: str, *,
               check_files: bool = True) -> YtvisDataset:
    """Validates already-loaded COCO content (see `load_coco`); UserError naming the file and
    the image or annotation otherwise."""

    def fail(message: str) -> UserError:
        return UserError(f"{json_path}: {message}")

    if not is_coco(content):
        raise fail("not a COCO file: expected an object with an 'images' list")
    category_map = parse_categories(content, fail)

    images = index_by_id(content, "images", _check_image, fail)

    annotations = annotation_list(content, fail)
    tracks: dict[int, list[Track]] = {image_id: [] for image_id in images}
    for position, annotation in enumerate(annotations):
        track = _parse_annotation(annotation, position, images, category_map, fail)
        tracks[annotation["image_id"]].append(track)

    videos = tuple(
        Video(video_id=image_id, height=int(image["height"]), width=int(image["width"]),
              file_names=(str(image["file_name"]),),
              frame_paths=(storage.join(images_dir, str(image["file_name"])),),
              tracks=tuple(tracks[image_id]))
        for image_id, image in images.items())
    if check_files:
        check_files_exist(videos, json_path)
    return YtvisDataset(json_path=json_path, frames_dir=images_dir, videos=videos,
                        categories=category_map, has_annotations=bool(annotations),
                        annotation_format=ANNOTATION_FORMAT)


def _check_image(image: Any, position: int, fail) -> None:
    if not isinstance(image, dict):
        raise fail(f"images[{position}] is not an object")
    for key in ("id", "file_name", "height", "width"):
        if key not in image:
            raise fail(f"images[{position}] (id {image.get('id')}) has no '{key}'")
    if not isinstance(image["id"], int) or isinstance(image["id"], bool):
        raise fail(f"images[{position}]: 'id' must be an integer")
    if not isinstance(image["file_name"], str) or not image["file_name"]:
        raise fail(f"image {image['id']}: 'file_name' must be a non-empty string")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in (image["height"], image["width"])):
        raise fail(f"image {image['id']} ({image['file_name']}): 'height' and 'width' must "
                   "be positive integers")


def _parse_annotation(annotation: Any, position: int, images: dict[int, dict],
                      category_map: CategoryMap, fail) -> Track:
    label, image, annotation_id = annotation_parent(
        annotation, position, images, "image_id", ("category_id", "segmentation"), fail)
    label = f"{label} (image {image['id']} ({image['file_name']}))"
    try:
        index = category_map.to_contiguous(annotation["category_id"])
    except (KeyError, TypeError, ValueError):
        raise fail(f"{label}: unknown category_id {annotation['category_id']!r} (known: "
                   f"{list(category_map.dataset_ids)})") from None
    segmentation = annotation["segmentation"]  # empty: no mask, so never a target
    try:
        mask_codec.check_segmentation(segmentation, image["height"], image["width"])
    except mask_codec.SegmentationFormatError as err:
        raise fail(f"{label}: {err}") from None
    area, bbox = annotation.get("area"), annotation.get("bbox")
    return Track(track_id=int(annotation_id), category_id=int(annotation["category_id"]),
                 label=index, iscrowd=bool(annotation.get("iscrowd", 0)),
                 segmentations=(segmentation,),
                 areas=None if area is None else (area,),
                 bboxes=None if bbox is None else (bbox,))
