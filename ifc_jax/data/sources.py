"""Where a config's videos come from, and a TensorFlow-free iterator over whole videos.

`config.data.dataset` picks the source:
  * "toy": the built-in synthetic dataset, generated into `config.data.root` on first use
    (parameters from `config.data.toy`, if the config has that section);
  * "tfds": a `youtube_vis` TFDS build (`config.data.tfds_name`), exported once into the
    YouTube-VIS layout under `config.data.root` (see tfds_adapter.py);
  * "coco": a COCO instance-segmentation JSON + image folder (data/coco.py), every image a
    one-frame video, for the image pre-training stage;
  * "toy_coco": the toy dataset's frames as a COCO image set (toy.write_toy_coco);
  * anything else ("ytvis19", "ytvis21", "ovis", ...): YouTube-VIS / OVIS JSON + frame folder
    under `config.data.root` (see data/README.md).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
from collections.abc import Iterator
from typing import Any

from ifc_jax import storage
from ifc_jax.data import clips, coco, toy
from ifc_jax.data.ytvis import CategoryMap, YtvisDataset, load_ytvis
from ifc_jax.io import UserError, read_json

log = logging.getLogger("ifc_jax.data")

SPLITS = ("train", "val")
COCO_DATASETS = ("coco", "toy_coco")  # read by data/coco.py
PREPARED_ON_FIRST_USE = ("toy", "toy_coco", "tfds")  # written under root by the first reader


def prepared_on_first_use(data_config: Any) -> bool:
    """Whether the config's dataset is generated or exported by its first reader (process 0
    of a multi-host job; the others wait), so its files need not exist beforehand."""
    return data_config.dataset in PREPARED_ON_FIRST_USE


def split_paths(data_config: Any, split: str) -> tuple[str, str]:
    """(annotation JSON path, frame folder) of `split` ('train' or 'val')."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = data_config.root
    return (storage.join(root, data_config[f"{split}_json"]),
            storage.join(root, data_config[f"{split}_frames"]))


def toy_options(data_config: Any) -> dict:
    """Keyword arguments for `toy.generate_toy_dataset` from `config.data.toy` (its keys are
    the ToySpec fields; the config's validation checks them)."""
    return dict(data_config.toy)


def load_split(data_config: Any, split: str) -> YtvisDataset:
    """Reads (preparing first, for toy / tfds sources) the `split` of a config's dataset."""
    if data_config.dataset in ("toy", "toy_coco"):
        toy.generate_toy_dataset(data_config.root, **toy_options(data_config))
        if data_config.dataset == "toy_coco":
            toy.write_toy_coco(data_config.root)
    elif data_config.dataset == "tfds":
        from ifc_jax.data import tfds_adapter  # imports TensorFlow Datasets

        tfds_adapter.export_tfds_split(data_config, split)
    json_path, frames_dir = split_paths(data_config, split)
    if data_config.dataset in COCO_DATASETS:
        return coco.load_coco(json_path, frames_dir, check_files=data_config.check_frame_files)
    return load_ytvis(json_path, frames_dir,
                      check_frame_files=data_config.check_frame_files)


def class_names_and_ids(data_config: Any, num_classes: int
                        ) -> tuple[list[str], list[int], str | None]:
    """(names, dataset category ids) of a model's `num_classes` classes, and the JSON file they
    came from: the categories of the config's dataset JSON (val, else train) when it exists
    and has that many; otherwise "class k" and ids k + 1 (None as the source), with a warning
    when a file was there but did not fit."""
    for split in ("val", "train"):
        json_path, _ = split_paths(data_config, split)
        if not storage.isfile(json_path):
            continue
        try:
            content = read_json(json_path, "annotation file")
            categories = CategoryMap.from_categories(content.get("categories") or [])
        except (UserError, KeyError, TypeError, ValueError, AttributeError) as err:
            log.warning("%s: categories not readable (%s); classes get generic names",
                        json_path, err)
            break
        if categories.num_classes != num_classes:
            log.warning("%s has %d categories but the model has %d classes; classes get "
                        "generic names", json_path, categories.num_classes, num_classes)
            break
        return list(categories.names), list(categories.dataset_ids), json_path
    return [f"class {k}" for k in range(num_classes)], list(range(1, num_classes + 1)), None


def shard_videos(num_videos: int, process_index: int, process_count: int) -> list[int]:
    """Positions of the videos process `process_index` handles at evaluation: every P-th."""
    return list(range(process_index, num_videos, process_count))


def iterate_eval_videos(dataset: YtvisDataset, short_side: int, max_size: int, *,
                        process_index: int = 0, process_count: int = 1,
                        prefetch: int = 2) -> Iterator[dict[str, Any]]:
    """Whole videos for inference, decoded ahead on threads; no TensorFlow needed.

    Yields `clips.load_eval_video` dicts (frames uint8 (L, h, w, 3), video_id, orig_height,
    orig_width, length, height, width, file_names) for this process's share of the videos,
    in dataset order.
    """
    positions = shard_videos(len(dataset.videos), process_index, process_count)
    if not dataset.videos:
        raise UserError(f"{dataset.json_path}: the split has no videos")

    def load(position: int) -> dict[str, Any]:
        return clips.load_eval_video(dataset.videos[position], short_side, max_size,
                                     dataset.json_path)

    prefetch = max(1, prefetch)
    with concurrent.futures.ThreadPoolExecutor(max_workers=prefetch) as pool:
        pending: collections.deque = collections.deque()
        for position in positions:
            pending.append(pool.submit(load, position))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
