"""Throughput of the training clip pipeline (clips/s), at the paper's clip settings.

The paper's YouTube-VIS recipe (docs/training.md#ytvis-finetuning) is pinned whatever the
config says: T = 5, short side from (360, 480), long side <= 1333, padded to 480 x 864. The
batch size and `max_instances` come from the config. The source is the toy dataset by default
(YouTube-VIS cannot be downloaded on a fresh machine) or the config's own dataset.

Measured: one process's pipeline (decode, resize, flip, pad, build targets, batch) as the train
loop sees it, numpy batches out, after `warmup_batches` batches (graph building, thread start).
TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

PAPER_SETTINGS = {
    "num_frames": 5,
    "train_short_sides": (360, 480),
    "train_max_size": 1333,
    "pad_height": 480,
    "pad_width": 864,
}


def benchmark_data_config(config: Any, source: str, toy_root: str) -> Any:
    """config.data with the paper's clip settings, pointed at the toy data if source == 'toy'."""
    data_config = copy.deepcopy(config.data)
    for key, value in PAPER_SETTINGS.items():
        data_config[key] = value
    if source == "toy":
        data_config.dataset = "toy"
        data_config.root = toy_root
        data_config.train_json = "train.json"
        data_config.train_frames = "train/JPEGImages"
        data_config.val_json = "valid.json"
        data_config.val_frames = "valid/JPEGImages"
    return data_config


def benchmark_train_pipeline(config: Any, *, source: str = "toy", toy_root: str = "data/toy",
                             batch_size: int | None = None, num_batches: int = 20,
                             warmup_batches: int = 3, seed: int = 0) -> dict[str, Any]:
    """Times `num_batches` batches of the train pipeline; returns the figures as a dict."""
    from ifc_jax.data import clips, pipeline, sources

    data_config = benchmark_data_config(config, source, toy_root)
    batch_size = int(batch_size or config.train.batch_size)
    start = time.perf_counter()
    dataset = sources.load_split(data_config, "train")
    load_seconds = time.perf_counter() - start

    settings = clips.ClipSettings.from_config(data_config)
    stream = pipeline.make_train_dataset(
        dataset, settings, batch_size=batch_size, seed=seed, process_index=0, process_count=1,
        num_parallel_calls=data_config.num_parallel_calls,
        prefetch_batches=data_config.prefetch_batches)
    batches = pipeline.numpy_batches(stream)
    try:
        start = time.perf_counter()
        for _ in range(warmup_batches):
            next(batches)
        warmup_seconds = time.perf_counter() - start
        instances = 0
        start = time.perf_counter()
        for _ in range(num_batches):
            batch = next(batches)
            instances += int(batch["instance_valid"].sum())
        seconds = time.perf_counter() - start
    finally:
        batches.close()
    clips_timed = num_batches * batch_size
    return {
        "what": "data",
        "clips_per_s": clips_timed / seconds,
        "frames_per_s": clips_timed * settings.num_frames / seconds,
        "batches_per_s": num_batches / seconds,
        "seconds": seconds,
        "num_batches": num_batches,
        "warmup_batches": warmup_batches,
        "warmup_seconds": warmup_seconds,
        "split_load_seconds": load_seconds,
        "batch_size": batch_size,
        "mean_instances_per_clip": instances / clips_timed,
        "source": f"{data_config.dataset}:{dataset.json_path}",
        "num_videos": len(dataset.videos),
        "settings": {
            "num_frames": settings.num_frames,
            "short_sides": list(settings.short_sides),
            "max_size": settings.max_size,
            "pad": [settings.pad_height, settings.pad_width],
            "max_instances": settings.max_instances,
            "flip_prob": settings.flip_prob,
        },
        "cpu_count": os.cpu_count(),
    }


def format_result(result: dict[str, Any]) -> str:
    """A few human-readable lines about a `benchmark_train_pipeline` result."""
    s = result["settings"]
    return "\n".join([
        f"train data pipeline on {result['source']} ({result['num_videos']} videos)",
        f"  T={s['num_frames']}, short side {tuple(s['short_sides'])}, max {s['max_size']}, "
        f"padded {s['pad'][0]}x{s['pad'][1]}, {s['max_instances']} instance slots, "
        f"batch {result['batch_size']}",
        f"  {result['clips_per_s']:.1f} clips/s ({result['frames_per_s']:.1f} frames/s, "
        f"{result['batches_per_s']:.2f} batches/s) over {result['num_batches']} batches, "
        f"{result['cpu_count']} CPUs",
    ])
