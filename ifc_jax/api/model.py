"""A trained IFC to hold in a notebook: `load(...)`, then `.predict(video)` and `.evaluate()`.

    import ifc_jax
    model = ifc_jax.load("workdirs/demo")            # config from the workdir's config.json
    tracks = model.predict("clip.mp4")               # or a folder of frames
    for track in tracks:
        print(track.class_name, round(track.score, 3), len(track.masks))

Each `Track` is one result of the video (one per (track, class) above
`config.inference.class_threshold`, as results.json has them), best score first; its `masks`
are one compressed COCO RLE per frame at the video's size, or a (frames, H, W) bool array
with `predict(..., decode_masks=True)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ifc_jax import storage
from ifc_jax.checkpoints import checkpoint_step, find_config_json
from ifc_jax.config import config_from_json, ensure_config
from ifc_jax.data.masks import decode_rle
from ifc_jax.data.sources import class_names_and_ids
from ifc_jax.evaluation.results import result_options, video_results
from ifc_jax.inference.loading import load_trained_model
from ifc_jax.inference.predictor import VideoPrediction, VideoPredictor
from ifc_jax.inference.video import VideoInput, inference_size, open_video
from ifc_jax.io import UserError

log = logging.getLogger("ifc_jax.predict")

VIDEO_ID = 1  # results.json's video_id for a single video (YouTube-VIS ids start at 1)
PROGRESS_SECONDS = 10.0


@dataclasses.dataclass
class Track:
    """One tracked instance of a video with one of its classes.

    masks: per frame, a compressed RLE {"size": [H, W], "counts": str} (the default), or a
    (frames, H, W) bool array when decoded.
    """

    track_index: int  # the tracker's instance number (shared by a track's class entries)
    class_index: int  # 0..K-1
    class_name: str
    category_id: int  # the dataset's category id, as results.json writes it
    score: float  # mean probability of the class over the windows that saw the track
    masks: list[dict] | np.ndarray

    def decoded_masks(self) -> np.ndarray:
        """(frames, H, W) bool masks, decoding the RLEs if needed."""
        if isinstance(self.masks, np.ndarray):
            return self.masks
        return np.stack([decode_rle(rle).astype(bool) for rle in self.masks])


@dataclasses.dataclass
class VideoTracks:
    """What `Model.predict_video_input` returns: the tracks, the results entries and timings."""

    tracks: list[Track]
    results: list[dict]  # results.json entries (video_id VIDEO_ID)
    prediction: VideoPrediction
    video: VideoInput
    model_input_size: tuple[int, int]
    seconds: float


def peak_host_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_memory() -> dict[str, int] | None:
    """bytes_in_use and peak_bytes_in_use of the first device (None on CPU: there the device
    memory is this process's host memory)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {key: int(stats[key]) for key in ("bytes_in_use", "peak_bytes_in_use")
            if key in stats}


def format_duration(seconds: float) -> str:
    """seconds as H:MM:SS (M:SS under an hour)."""
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class BatchProgress:
    """Progress over the frames of one or several videos predicted in a row.

    Logs (logger ifc_jax.predict, about every PROGRESS_SECONDS and when a video of several
    is done) the video (i/n), the frames done of all the videos' total, frames/s and the ETA
    of the whole batch. frames/s is the batch's throughput: frames done over the time since
    the first frame was asked for, so compiling, reading and drawing overlays count too, and
    the ETA includes them in proportion.
    """

    def __init__(self, frame_counts: Sequence[int]):
        self.frame_counts = list(frame_counts)
        self.total = sum(self.frame_counts)
        self.done = 0
        self.video = 0  # 1-based number of the video being predicted; 0 before the first
        self.begin: float | None = None
        self.last = 0.0

    def frames(self, frames: Iterable[Any]) -> Iterator[Any]:
        """Passes the next video's `frames` through, counting and logging them."""
        self.video += 1
        if self.begin is None:
            self.begin = self.last = time.perf_counter()
        for frame in frames:
            yield frame
            self.done += 1
            now = time.perf_counter()
            if now - self.last >= PROGRESS_SECONDS and self.done < self.total:
                self._log(now)
                self.last = now

    def video_done(self) -> None:
        """Logs the batch's progress after a video of several (its tracks and results.json;
        `predict` draws its pictures while the model runs on the next video)."""
        if len(self.frame_counts) > 1 and self.video < len(self.frame_counts):
            now = time.perf_counter()
            self._log(now)
            self.last = now

    def _log(self, now: float) -> None:
        elapsed = max(now - (self.begin or now), 1e-9)
        rate = self.done / elapsed
        eta = format_duration((self.total - self.done) / rate) if rate > 0 else "?"
        device = device_memory()
        log.info("predict: %s%d/%d frames (%.0f%%), %.1f frames/s, ETA %s, peak host RSS "
                 "%.0f MiB%s",
                 f"video {self.video}/{len(self.frame_counts)}, "
                 if len(self.frame_counts) > 1 else "",
                 self.done, self.total, 100.0 * self.done / max(self.total, 1), rate, eta,
                 peak_host_rss_mib(),
                 f", device peak {device['peak_bytes_in_use'] / 2**20:.0f} MiB"
                 if device and "peak_bytes_in_use" in device else "")


def with_progress(frames: Iterable[Any], num_frames: int) -> Iterator[Any]:
    """Passes `frames` through, logging frames read, frames/s, ETA and peak memory about
    every 10 s (`BatchProgress` of one video)."""
    return BatchProgress([num_frames]).frames(frames)


class Model:
    """A config's IFC with trained weights, ready to predict (compiled once per input size)."""

    def __init__(self, config: Any, weights: str):
        self.config = ensure_config(config)
        self.weights = weights
        self.result_options = result_options(self.config.inference)
        self.class_names, self.category_ids, self.class_names_source = class_names_and_ids(
            self.config.data, self.config.model.num_classes)
        self.network, self.variables = load_trained_model(self.config, weights)
        self.predictor = VideoPredictor.from_config(self.network, self.variables,
                                                    self.config.inference)

    def predict_video_input(self, video: VideoInput,
                            progress: BatchProgress | None = None) -> VideoTracks:
        """Tracks of an opened video (frames resized as evaluation resizes them). `progress`
        counts and logs the frames (one of several videos); by default the video's own."""
        data = self.config.data
        height, width = inference_size(video.height, video.width, data.test_short_side,
                                       data.test_max_size)
        log.info("predict: %s, %d frames %dx%d (WxH)%s at %.2f fps, model input %dx%d",
                 video.path, video.num_frames, video.width, video.height,
                 f" upright (turned {video.rotation} degrees)" if video.rotation else "",
                 video.fps, width, height)
        progress = progress or BatchProgress([video.num_frames])
        begin = time.perf_counter()
        prediction = self.predictor.predict(
            progress.frames(video.resized_frames(height, width)),
            video.num_frames, (height, width), (video.height, video.width))
        results = video_results(VIDEO_ID, prediction.class_probs, prediction.segmentations,
                                self.category_ids, **self.result_options)
        tracks = self._tracks(prediction, results)
        return VideoTracks(tracks, results, prediction, video, (height, width),
                           time.perf_counter() - begin)

    def _tracks(self, prediction: VideoPrediction, results: list[dict]) -> list[Track]:
        """`Track`s of the results entries, best score first."""
        # video_results puts a track's own segmentation list (the same object) into each of
        # its entries, so the list's identity says which track an entry belongs to.
        by_segmentations = {id(s): index for index, s in enumerate(prediction.segmentations)}
        index_of_category = {cid: k for k, cid in enumerate(self.category_ids)}
        tracks = []
        for entry in results:
            class_index = index_of_category[entry["category_id"]]
            tracks.append(Track(track_index=by_segmentations[id(entry["segmentations"])],
                                class_index=class_index,
                                class_name=self.class_names[class_index],
                                category_id=entry["category_id"], score=entry["score"],
                                masks=entry["segmentations"]))
        return sorted(tracks, key=lambda track: -track.score)

    def predict(self, video: str, *, decode_masks: bool = False,
                fps: float = 10.0) -> list[Track]:
        """The tracks of a video file (mp4, mkv, avi, webm, ...) or a folder of frames (`fps`
        is the folder's frame rate), best score first; masks as RLEs unless `decode_masks`."""
        tracks = self.predict_video_input(open_video(video, folder_fps=fps)).tracks
        if decode_masks:
            for track in tracks:
                track.masks = track.decoded_masks()
        return tracks

    def evaluate(self, output: str, *, split: str = "val") -> dict[str, Any]:
        """Predicts every video of the config's `split`, writes OUTPUT/results.json (and
        metrics.json when annotated) and returns the summary with the metrics."""
        from ifc_jax.evaluation.evaluate import evaluate_split

        return evaluate_split(self.config, self.network, self.variables, output, split,
                              run=self.provenance())

    def provenance(self) -> dict[str, Any]:
        """What produced this model's results: weights, their step, windows, config hash."""
        return provenance(self.config, self.weights, checkpoint_step(self.weights))


def provenance(config: Any, weights: str, step: int | None) -> dict[str, Any]:
    """metrics.json's "run": the weights (path) and their training step, the windows (T, S)
    and a hash of the whole config."""
    inference = config.inference
    return {"weights": storage.absolute(weights), "checkpoint_step": step,
            "window_frames": inference.window_frames,
            "window_stride": inference.window_stride,
            "config_sha256": hashlib.sha256(
                config.to_json(sort_keys=True).encode()).hexdigest()[:16]}


def resolve_config(config: Any | None, workdir: str) -> Any:
    """`config` (a spec or ConfigDict) when given, else the config a training recorded in
    `workdir` (WORKDIR/config.json); UserError when there is neither."""
    if config is not None:
        return ensure_config(config)
    path = find_config_json(workdir)
    if path is None:
        raise UserError(f"{workdir}: no config.json recorded there (a training workdir has "
                        "one); give the config (--config CFG, or config= in Python)")
    return config_from_json(storage.read_bytes(path).decode("utf-8"), path)


def load(workdir: str, config: Any | None = None, *, weights: str | None = None) -> Model:
    """The trained model of a workdir: its latest checkpoint (or `weights`: a checkpoint or
    `convert` output) with `config` (a recipe name, a file or a ConfigDict), by default the
    config the training recorded in the workdir."""
    if not storage.exists(weights or workdir):
        raise UserError(f"{weights or workdir}: no such workdir or checkpoint")
    return Model(resolve_config(config, workdir), weights or workdir)
