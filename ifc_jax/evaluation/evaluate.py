"""`evaluate_split(config, model, variables, output_dir)`: predict a whole split, write and
score it; with several processes, each predicts its share of the videos.

Writes OUTPUT_DIR/results.json (the YouTube-VIS / OVIS server format) and, when the split has
annotations, OUTPUT_DIR/metrics.json (the official metric computed locally). A COCO split
(one-frame videos, data/coco.py) is written as COCO detections and scored by COCOeval. No
TensorFlow: videos are decoded with `ifc_jax.data.sources.iterate_eval_videos`.

The work is two steps, usable apart (evaluation during training calls them with a predictor
it keeps between evaluations):
  * `predict_share`: the results of one process's share of the videos, grouped by video;
    each of its devices predicts a stream of whole videos (every (P D)-th,
    `sources.shard_videos`), so results do not depend on the number of devices;
  * `write_merged`: process 0 gathers the shares, merges them in dataset order (so the
    files equal a one-process run's), writes and scores. The other processes hand their
    share over as a hidden part file in OUTPUT_DIR: a multi-host run already needs storage
    every host sees (orbax checkpoints), and the files may be gs:// URLs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ifc_jax import storage
from ifc_jax.data import sources
from ifc_jax.data.ytvis import YtvisDataset
from ifc_jax.evaluation.coco_metric import coco_detections, evaluate_coco
from ifc_jax.evaluation.results import result_options, video_results, write_results_json
from ifc_jax.evaluation.ytvis_metric import evaluate_results
from ifc_jax.inference.packing import PackedVideos
from ifc_jax.inference.predictor import STAGES, PendingPrediction, VideoPredictor
from ifc_jax.io import (
    UserError,
    atomic_write_bytes,
    atomic_writer,
    check_write_target,
    read_json,
)
from ifc_jax.models.ifc import IFC

log = logging.getLogger("ifc_jax.evaluate")
# Videos each device stream keeps submitted beyond the one whose results it collects.
VIDEOS_AHEAD = 2
# The files an evaluation writes into its output folder.
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class EvalShare:
    """The predictions of one process's share of a split, or of all of it once merged."""

    positions: list[int]  # the videos' positions in the dataset, ascending
    results: list[list[dict]]  # per video (same order), its results.json entries
    frames: int
    seconds: float  # wall time of the prediction
    seconds_by_stage: dict[str, float]

    def flat_results(self) -> list[dict]:
        """The results.json entries, video after video."""
        return [entry for entries in self.results for entry in entries]


def _sync_processes(name: str) -> None:
    """A barrier of all processes of the JAX runtime."""
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


Barrier = Callable[[str], None]


def load_eval_split(config: Any, split: str = "val", *, process_index: int = 0,
                    process_count: int = 1, barrier: Barrier | None = None) -> YtvisDataset:
    """`split` of `config.data`, its categories checked against the model. With several
    processes, process 0 prepares it first (a toy or TFDS split is written on first use) and
    the others read it after a barrier."""
    if process_count == 1:
        dataset = sources.load_split(config.data, split)
    else:
        barrier = barrier or _sync_processes
        if process_index == 0:
            dataset = sources.load_split(config.data, split)
        barrier(f"{split} split ready")
        if process_index != 0:
            dataset = sources.load_split(config.data, split)
    if dataset.categories.num_classes != config.model.num_classes:
        raise UserError(f"{dataset.json_path}: {dataset.categories.num_classes} categories but "
                        f"the model has config.model.num_classes={config.model.num_classes}")
    return dataset


def predict_share(config: Any, predictor: VideoPredictor, dataset: YtvisDataset, *,
                  process_index: int = 0, process_count: int = 1,
                  devices: Sequence[Any] | None = None) -> EvalShare:
    """Runs `predictor` on this process's share of `dataset`'s videos (all of them with one
    process), resized as `config.data` says, results as `config.inference` says.

    Every device of every process runs its own stream of whole videos: with D devices per
    process, device d of process p takes every (P D)-th video from position p D + d, on a
    thread of its own (the device programs run concurrently; the host work interleaves). A
    video is computed by one device with the same programs whatever the device count, so
    the results do not depend on it. `devices`: this process's devices (default: all local
    ones).
    """
    import jax

    devices = list(devices or jax.local_devices())
    streams = process_count * len(devices)
    options = result_options(config.inference)
    category_ids = dataset.categories.dataset_ids
    first_stream = process_index * len(devices)
    stream_positions = [sources.shard_videos(len(dataset.videos), first_stream + index, streams)
                        for index in range(len(devices))]
    progress = _Progress(sum(map(len, stream_positions)), process_index, process_count,
                         len(devices))
    begin = time.perf_counter()

    def run_stream(index: int) -> EvalShare:
        on_device = predictor.on_device(devices[index])
        share = EvalShare(stream_positions[index], [], 0, 0.0, dict.fromkeys(STAGES, 0.0))
        videos = sources.iterate_eval_videos(dataset, int(config.data.test_short_side),
                                             int(config.data.test_max_size),
                                             process_index=first_stream + index,
                                             process_count=streams)
        # Videos of one window (offline: every YouTube-VIS 2019 video) share the per-frame
        # programs' chunks; two videos stay submitted ahead of the one collected, so that a
        # chunk is usually full (and the device busy) before a result needs it.
        stream = PackedVideos(on_device)
        pending: deque[tuple[dict[str, Any], PendingPrediction]] = deque()

        def collect(video: dict[str, Any], handle: PendingPrediction) -> None:
            prediction = handle.result()
            share.results.append(video_results(video["video_id"], prediction.class_probs,
                                               prediction.segmentations, category_ids,
                                               **options))
            for name, value in prediction.seconds.items():
                share.seconds_by_stage[name] += value
            share.frames += video["length"]
            progress.video_done(video["length"])

        for video in videos:
            # A video's last masks encode on the host threads while the next ones run.
            handle = stream.submit(video["frames"], video["length"],
                                   (video["height"], video["width"]),
                                   (video["orig_height"], video["orig_width"]))
            pending.append(({key: video[key] for key in ("video_id", "length")}, handle))
            if len(pending) > VIDEOS_AHEAD:
                collect(*pending.popleft())
        while pending:
            collect(*pending.popleft())
        return share

    if len(devices) == 1:
        shares = [run_stream(0)]
    else:
        with concurrent.futures.ThreadPoolExecutor(len(devices),
                                                   thread_name_prefix="ifc-eval") as pool:
            shares = list(pool.map(run_stream, range(len(devices))))
    share = merge_shares(shares)
    share.seconds = time.perf_counter() - begin
    return share


class _Progress:
    """Logs evaluated videos and frames/s of one process (every 10 videos and the last)."""

    def __init__(self, total: int, process_index: int, process_count: int, devices: int):
        self.total, self.videos, self.frames = total, 0, 0
        self.where = (f" (share {process_index + 1} of {process_count})"
                      if process_count > 1 else "")
        self.where += f" on {devices} devices" if devices > 1 else ""
        self.begin = time.perf_counter()
        self.lock = threading.Lock()

    def video_done(self, frames: int) -> None:
        with self.lock:
            self.videos += 1
            self.frames += frames
            if self.videos % 10 == 0 or self.videos == self.total:
                elapsed = time.perf_counter() - self.begin
                log.info("evaluated %d/%d videos, %d frames, %.1f frames/s%s", self.videos,
                         self.total, self.frames, self.frames / max(elapsed, 1e-9),
                         self.where)


def merge_shares(shares: Sequence[EvalShare]) -> EvalShare:
    """The shares of all processes as one, videos in dataset order. Times: the slowest
    process's wall time; stage times summed over processes."""
    by_position: dict[int, list[dict]] = {}
    for share in shares:
        for position, entries in zip(share.positions, share.results, strict=True):
            if position in by_position:
                raise ValueError(f"video at position {position} is in two shares")
            by_position[position] = entries
    positions = sorted(by_position)
    return EvalShare(positions, [by_position[position] for position in positions],
                     sum(share.frames for share in shares),
                     max((share.seconds for share in shares), default=0.0),
                     {name: sum(share.seconds_by_stage.get(name, 0.0) for share in shares)
                      for name in STAGES})


def write_share(path: str, share: EvalShare) -> None:
    """`share` as one JSON object at `path` (written whole or not at all); entries are
    serialised one at a time, as `write_results_json` does."""
    header = {"positions": share.positions, "frames": share.frames, "seconds": share.seconds,
              "seconds_by_stage": share.seconds_by_stage}
    with atomic_writer(path, "w") as stream:
        stream.write(json.dumps(header)[:-1] + ',"results":[')
        for index, entries in enumerate(share.results):
            stream.write(("," if index else "") + "[")
            stream.write(",".join(json.dumps(entry, separators=(",", ":"), allow_nan=False)
                                  for entry in entries))
            stream.write("]")
        stream.write("]}")


def read_share(path: str) -> EvalShare:
    content = read_json(path, "evaluation share")
    return EvalShare(list(content["positions"]), content["results"], int(content["frames"]),
                     float(content["seconds"]), dict(content["seconds_by_stage"]))


def share_path(output_dir: str, process_index: int, process_count: int) -> str:
    """Where process `process_index` leaves its share for process 0 (hidden, removed once
    merged)."""
    return storage.join(output_dir, f".share-{process_index}-of-{process_count}.json.part")


def check_output_dir(output_dir: str, flag: str = "--output") -> None:
    """UserError unless `output_dir` can take an evaluation's files: a writable folder (or
    one that can be made) where neither file's name is taken by a folder. Cheap; call it
    before predicting, since the files are written only at the very end."""
    check_write_target(output_dir, flag, folder=True)
    for name in (RESULTS_FILE, METRICS_FILE):
        path = storage.join(output_dir, name)
        if storage.isdir(path):
            raise UserError(f"{path}: is a folder; evaluate writes this file (move it away "
                            f"or give another {flag})")


def write_evaluation(dataset: YtvisDataset, predicted: EvalShare, output_dir: str,
                     run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes OUTPUT_DIR/results.json of the predictions of all of `dataset` and, when it is
    annotated, scores them into OUTPUT_DIR/metrics.json; returns the summary.

    `run`: what produced the results (weights, checkpoint step, windows, config hash), kept
    in the summary and in metrics.json under "run".
    """
    results = predicted.flat_results()
    images = dataset.annotation_format == "coco"  # one-frame videos: COCO detections
    if images:
        results = coco_detections(results)
    storage.makedirs(output_dir)
    results_path = storage.join(output_dir, RESULTS_FILE)
    metrics_path = storage.join(output_dir, METRICS_FILE)
    # Both files are written beside their targets and renamed together at the end, so a
    # failure leaves the previous pair, never a new results.json beside old metrics.
    pending_results = storage.join(output_dir, f".results-{os.getpid()}.json.part")
    pending_metrics = storage.join(output_dir, f".metrics-{os.getpid()}.json.part")
    summary: dict[str, Any] = {
        "results": results_path,
        "videos": len(dataset.videos),
        "annotation_format": dataset.annotation_format,  # "coco": the videos are images
        "frames": predicted.frames,
        "predictions": len(results),
        "seconds": predicted.seconds,
        "frames_per_second": predicted.frames / max(predicted.seconds, 1e-9),
        "seconds_by_stage": predicted.seconds_by_stage,
        "run": dict(run or {}),
    }
    try:
        write_results_json(pending_results, results)
        if dataset.has_annotations:
            ground_truth = read_json(dataset.json_path, "annotation file")
            if images:
                metrics = evaluate_coco(ground_truth, results, gt_source=dataset.json_path)
            else:
                metrics = evaluate_results(ground_truth, results, gt_source=dataset.json_path,
                                           results_source=results_path)
            atomic_write_bytes(pending_metrics, (json.dumps(
                {**metrics, "run": summary["run"]}, indent=2) + "\n").encode())
            summary["metrics"] = metrics
            summary["metrics_file"] = metrics_path
        storage.replace(pending_results, results_path)
        if dataset.has_annotations:
            storage.replace(pending_metrics, metrics_path)
    finally:
        for path in (pending_results, pending_metrics):
            storage.remove(path)
    return summary


def write_merged(dataset: YtvisDataset, share: EvalShare, output_dir: str,
                 run: dict[str, Any] | None = None, *, process_index: int = 0,
                 process_count: int = 1, barrier: Barrier | None = None
                 ) -> dict[str, Any] | None:
    """Every process calls this with its share: process 0 merges the shares, writes and
    scores them (`write_evaluation`) and returns the summary; the others return None. No
    process returns before the files are written.

    With several processes, processes 1..P-1 write their share to `share_path` in
    `output_dir` (storage every process sees), then all meet at `barrier` (default: the JAX
    runtime's); process 0 reads the parts, merges, writes, deletes the parts, and all meet
    again.
    """
    if process_count == 1:
        return write_evaluation(dataset, share, output_dir, run)
    barrier = barrier or _sync_processes
    if process_index != 0:
        storage.makedirs(output_dir)
        write_share(share_path(output_dir, process_index, process_count), share)
    barrier("evaluation shares written")
    summary = None
    if process_index == 0:
        parts = [share_path(output_dir, index, process_count)
                 for index in range(1, process_count)]
        try:
            shares = [share, *(read_share(path) for path in parts)]
            summary = write_evaluation(dataset, merge_shares(shares), output_dir, run)
        finally:
            for path in parts:
                storage.remove(path)
    barrier("evaluation written")
    return summary


def evaluate_split(config: Any, model: IFC, variables: Any, output_dir: str,
                   split: str = "val", run: dict[str, Any] | None = None, *,
                   process_index: int = 0, process_count: int = 1) -> dict[str, Any] | None:
    """Runs `model` with `variables` on `split` of `config.data` with `config.inference`'s
    windows and tracking; returns a summary (with the metrics if the split is annotated).

    `run`: what produced the results (weights, checkpoint step, windows, config hash), kept
    in the summary and in metrics.json under "run". With `process_count` > 1 every process
    of the JAX runtime calls this: each predicts its share, process 0 writes the files and
    returns the summary, the others return None (`write_merged`).
    """
    dataset = load_eval_split(config, split, process_index=process_index,
                              process_count=process_count)
    predictor = VideoPredictor.from_config(model, variables, config.inference)
    share = predict_share(config, predictor, dataset, process_index=process_index,
                          process_count=process_count)
    return write_merged(dataset, share, output_dir, run, process_index=process_index,
                        process_count=process_count)
