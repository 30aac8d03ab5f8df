"""`evaluate_split(config, model, variables, output_dir)`: predict a whole split, write and
score it.

Writes OUTPUT_DIR/results.json (the YouTube-VIS / OVIS server format) and, when the split has
annotations, OUTPUT_DIR/metrics.json (the official metric computed locally). No TensorFlow:
videos are decoded with `ifc_jax.data.sources.iterate_eval_videos`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from ifc_jax.data import sources
from ifc_jax.evaluation.results import result_options, video_results, write_results_json
from ifc_jax.evaluation.ytvis_metric import evaluate_results
from ifc_jax.inference.predictor import VideoPredictor
from ifc_jax.io import UserError, atomic_write_bytes, read_json
from ifc_jax.models.ifc import IFC

log = logging.getLogger("ifc_jax.evaluate")


def evaluate_split(config: Any, model: IFC, variables: Any, output_dir: str,
                   split: str = "val", run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs `model` with `variables` on `split` of `config.data` with `config.inference`'s
    windows and tracking; returns a summary (with the metrics if the split is annotated).

    `run`: what produced the results (weights, checkpoint step, windows, config hash), kept
    in the summary and in metrics.json under "run".
    """
    options = result_options(config.inference)
    dataset = sources.load_split(config.data, split)
    if dataset.categories.num_classes != config.model.num_classes:
        raise UserError(f"{dataset.json_path}: {dataset.categories.num_classes} categories but "
                        f"the model has config.model.num_classes={config.model.num_classes}")
    predictor = VideoPredictor.from_config(model, variables, config.inference)
    category_ids = dataset.categories.dataset_ids
    results: list[dict] = []
    seconds = {"frame_features": 0.0, "windows": 0.0, "tracking": 0.0, "masks_rle": 0.0}
    total_frames, begin = 0, time.perf_counter()
    videos = sources.iterate_eval_videos(dataset, int(config.data.test_short_side),
                                         int(config.data.test_max_size))
    for index, video in enumerate(videos, start=1):
        prediction = predictor.predict(video["frames"], video["length"],
                                       (video["height"], video["width"]),
                                       (video["orig_height"], video["orig_width"]))
        results += video_results(video["video_id"], prediction.class_probs,
                                 prediction.segmentations, category_ids, **options)
        for name, value in prediction.seconds.items():
            seconds[name] += value
        total_frames += video["length"]
        if index % 10 == 0 or index == len(dataset.videos):
            elapsed = time.perf_counter() - begin
            log.info("evaluated %d/%d videos, %d frames, %.1f frames/s", index,
                     len(dataset.videos), total_frames, total_frames / max(elapsed, 1e-9))
    elapsed = time.perf_counter() - begin
    os.makedirs(output_dir, exist_ok=True)
    results_path = os.path.join(output_dir, "results.json")
    metrics_path = os.path.join(output_dir, "metrics.json")
    # Both files are written beside their targets and renamed together at the end, so a
    # failure leaves the previous pair, never a new results.json beside old metrics.
    pending_results = os.path.join(output_dir, f".results-{os.getpid()}.json.part")
    pending_metrics = os.path.join(output_dir, f".metrics-{os.getpid()}.json.part")
    summary: dict[str, Any] = {
        "results": results_path,
        "videos": len(dataset.videos),
        "frames": total_frames,
        "predictions": len(results),
        "seconds": elapsed,
        "frames_per_second": total_frames / max(elapsed, 1e-9),
        "seconds_by_stage": seconds,
        "run": dict(run or {}),
    }
    try:
        write_results_json(pending_results, results)
        if dataset.has_annotations:
            ground_truth = read_json(dataset.json_path, "annotation file")
            metrics = evaluate_results(ground_truth, results, gt_source=dataset.json_path,
                                       results_source=results_path)
            atomic_write_bytes(pending_metrics, (json.dumps(
                {**metrics, "run": summary["run"]}, indent=2) + "\n").encode())
            summary["metrics"] = metrics
            summary["metrics_file"] = metrics_path
        os.replace(pending_results, results_path)
        if dataset.has_annotations:
            os.replace(pending_metrics, metrics_path)
    finally:
        for path in (pending_results, pending_metrics):
            if os.path.exists(path):
                os.unlink(path)
    return summary
