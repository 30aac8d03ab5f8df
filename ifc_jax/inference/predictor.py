"""Whole-video inference: per-frame features once, windows of T frames, tracking.

The algorithm: docs/inference.md.

`VideoPredictor` streams a video through the model:
* frames arrive as an iterable (a decoded array or a streaming reader) and are encoded in
  chunks of C frames (`chunk_frames`: T, or several window strides for near-online) by the
  jitted per-frame half of the model (backbone, input projection, position encoding); each
  frame is encoded exactly once;
* windows [start, start + T) slide by `window_stride` (the last one right-aligned,
  docs/inference.md#windows). The windows starting in one chunk run together, up to
  `windows_per_call` per call of the jitted per-window half (encoder, decoder, heads), which
  cuts them out of that chunk and the next on the device. A window shorter than T (a video
  shorter than T) is padded in time with blank frames that `frame_valid` masks out exactly;
* the same call keeps the object queries on the device (arg-max class is not "no object",
  query order kept) and crops the stride-8 logits to the frame, so only the kept instances
  of each window travel to the host, while the device already works on the next calls: no
  call waits for the host;
* kept instances go to `ClipTracker`; each frame it finishes is turned into RLEs at the
  original size straight from its stride-8 mean logits, no full-size mask, on a thread pool
  that overlaps with the device and the tracker: `RleUpsampler` on the host, or, on a GPU or
  TPU, `DeviceRleEncoder` with the run boundaries found on the device (`mask_rle`);
* `submit` returns once all of a video's calls are dispatched, the last ones still in flight;
  `PendingPrediction.result()` tracks their windows and waits for the masks. Submitting the
  next video before that (as `evaluate` does) keeps the device busy across videos.
Device memory holds a few chunks of features and calls in flight, host memory the tracker's
bounded state and the per-frame RLEs: neither grows with the video beyond that.

Offline inference is the same with `window_frames` >= the video length (e.g. T=36 on
YouTube-VIS 2019 val: one window per video); `packing.PackedVideos` (what `evaluate` uses)
writes such videos' frames end to end into shared chunks instead of padding each with blank
frames.
"""

from __future__ import annotations

import concurrent.futures
import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifc_jax.data.masks import empty_rle
from ifc_jax.host import available_cores
from ifc_jax.inference import device_rle
from ifc_jax.inference.packed_variables import PackedVariables, unpacked
from ifc_jax.inference.rle_upsample import RleUpsampler
from ifc_jax.inference.tracking import ClipTracker, stride8_valid_size
from ifc_jax.models.ifc import IFC

# Host-side seconds of a prediction, by stage: pulling frames from the input (decoding,
# resizing), dispatching the frame-feature calls (their frames go to the device with them)
# and the window calls, starting the copies of a call's kept instances to the host, waiting
# for device results, tracking, the RLE encoding (summed over the pool's threads, so it can
# exceed the wall time) and the wait for the last of it in `PendingPrediction.result()`.
# The dispatch stages are apart because a dispatch that does not return at once (seen on a
# GPU: as long as the device's own time) serialises host and device work.
STAGES = ("input", "dispatch_chunks", "dispatch_windows", "copy_start", "device_wait",
          "tracking", "masks_rle", "rle_wait")
# The outputs of `run_windows` every call copies to the host.
OUTPUTS_COPIED = ("count", "probs", "logits", "mask_probs")
# Kept queries copied to the host per window; a window keeping more (rare for a trained
# model: a handful of objects) fetches all its queries' outputs instead.
KEPT_SLOTS = 32
# Fewest masks in one RLE job of the host thread pool.
MASKS_PER_JOB = 16
# Window calls dispatched ahead of the one whose outputs the host is working on.
CALLS_IN_FLIGHT = 2
# Values of `config.inference.mask_rle`: where the final masks' run boundaries are found.
MASK_RLE_PATHS = ("auto", "host", "device")


def mask_encoder(valid_size: tuple[int, int], output_size: tuple[int, int], mask_rle: str,
                 device: jax.Device | None = None) -> RleUpsampler | device_rle.DeviceRleEncoder:
    """The encoder of (n, h8, w8) mean logits -> n RLEs at `output_size` for `mask_rle`:
    "host" `RleUpsampler`; "device" `DeviceRleEncoder` on `device` (JAX's default when None)
    where it supports the sizes (upsampling), else the host one; "auto" the device one on a
    GPU or TPU; on a CPU the host one, whose outline path costs less for object-like masks,
    handing the batches it would make pixel by pixel (noisy masks) to the device one. They
    give the same masks but for pixels whose value is within float32 rounding of 0."""
    if mask_rle not in MASK_RLE_PATHS:
        raise ValueError(f"mask_rle must be one of {MASK_RLE_PATHS}, got {mask_rle!r}")
    on_device = mask_rle == "device" or (mask_rle == "auto"
                                         and device_rle.platform_of(device) != "cpu")
    supported = device_rle.supports(valid_size, output_size)
    if on_device and supported:
        return device_rle.DeviceRleEncoder(valid_size, output_size, device)
    if mask_rle == "auto" and supported:  # a CPU: the device's for noisy batches only
        return RleUpsampler(valid_size, output_size,
                            dense_encoder=device_rle.DeviceRleEncoder(valid_size, output_size,
                                                                      device))
    return RleUpsampler(valid_size, output_size)


def rle_threads(host_threads: int, platform: str, cores: int) -> int:
    """The RLE pool's size for `inference.host_threads` on a `platform` backend: as asked on
    a GPU or TPU; on a CPU at most half the cores (at least 1), as XLA's own threads already
    span every core there and each further host thread takes time from the model (measured
    on 2 cores: one thread beats two, near-online and offline alike). 0 stays 0 (inline)."""
    if platform != "cpu" or host_threads == 0:
        return host_threads
    return min(host_threads, max(1, cores // 2))


def window_bounds(num_frames: int, window_frames: int, window_stride: int
                  ) -> list[tuple[int, int]]:
    """[start, end) of each window: stride S, last window right-aligned.

    See docs/inference.md#windows.
    """
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if window_frames < 1 or window_stride < 1:
        raise ValueError("window_frames and window_stride must be >= 1")
    bounds, start = [], 0
    while True:
        end = start + window_frames
        if end >= num_frames:
            bounds.append((max(0, num_frames - window_frames), num_frames))
            return bounds
        bounds.append((start, end))
        start += window_stride


def pad_chunk(frames: np.ndarray, chunk: int, frame_size: tuple[int, int] | None = None,
              count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of one `encode_frames` call from F <= chunk frames (F, H, W, 3) uint8.

    Returns pixels (chunk, H, W, 3), the frames followed by blank filler frames, and padding
    (chunk, H, W) bool, True on every pixel of the filler frames (so one compiled shape serves
    a video's last, shorter chunk) and, when the frames are only `frame_size` (h, w) at the
    top-left of a larger (H, W) (`pad_size_multiple`), on the pixels outside it.
    count: given, `frames` is a whole chunk (`blank_chunk`'s buffer) of which only the first
    `count` are frames: the rest are blanked in place and the buffer used as it is instead of
    copied.
    """
    if count is None:
        count = len(frames)
    elif len(frames) != chunk or not 0 <= count <= chunk:
        raise ValueError(f"count {count} of a buffer of {len(frames)} frames, not {chunk}")
    if count > chunk:
        raise ValueError(f"{count} frames do not fit a chunk of {chunk}")
    padding = np.zeros((chunk, *frames.shape[1:3]), bool)
    if frame_size is not None:
        padding[:, frame_size[0]:, :] = True
        padding[:, :, frame_size[1]:] = True
    if len(frames) == chunk:
        if count < chunk:  # only a `count` buffer, never a caller's full chunk, is written
            frames[count:] = 0
            padding[count:] = True
        return frames, padding
    pixels = np.zeros((chunk, *frames.shape[1:]), np.uint8)
    pixels[:count] = frames
    padding[count:] = True
    return pixels, padding


def blank_chunk(chunk: int, input_size: tuple[int, int], frame_size: tuple[int, int] | None
                ) -> np.ndarray:
    """A new (chunk, H, W, 3) uint8 buffer for frames of `frame_size` (h, w) (None: H x W):
    zero outside the frames' (h, w) top-left corner (the spatial padding the model sees),
    left uninitialised inside, where every used frame is written. Each dispatched chunk gets
    a buffer of its own (the call may still read it after returning); zero-filling the whole
    of it cost more host time than the frames' copy."""
    pixels = np.empty((chunk, *input_size, 3), np.uint8)
    if frame_size is not None:
        pixels[:, frame_size[0]:] = 0
        pixels[:, :frame_size[0], frame_size[1]:] = 0
    return pixels


def padded_input_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The model input size of (height, width) frames: themselves (multiple 0), else each side
    rounded up to a multiple of `multiple`."""
    if not multiple:
        return height, width
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def checked_frames(frames: Iterable[np.ndarray], height: int, width: int,
                   seconds: dict[str, float]) -> Iterator[np.ndarray]:
    """The frames of `frames` as arrays, each checked to be (height, width, 3); the time spent
    pulling them (decoding, resizing) is added to seconds["input"]."""
    frames = iter(frames)
    while True:
        begin = time.perf_counter()
        frame = next(frames, None)
        seconds["input"] += time.perf_counter() - begin
        if frame is None:
            return
        frame = np.asarray(frame)
        if frame.shape != (height, width, 3):
            raise ValueError(f"frame of shape {frame.shape}, expected {(height, width, 3)}")
        yield frame


def kept_instances(outputs: dict[str, jax.Array], windows: int, seconds: dict[str, float]
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """The kept instances of the first `windows` windows of a `run_windows` call: (probs
    (n, K+1), logits (n, T, h8, w8), their sigmoids or None) each, copied to the host (a window
    keeping more queries than the call's slots fetches its full outputs and leaves the
    sigmoids to the tracker). The waits count as device_wait."""
    begin = time.perf_counter()
    count, probs, logits, mask_probs = (np.asarray(outputs[name]) for name in OUTPUTS_COPIED)
    instances = []
    for index in range(windows):
        kept = int(count[index])
        if kept <= probs.shape[1]:
            instances.append((probs[index, :kept], logits[index, :kept],
                              mask_probs[index, :kept]))
        else:  # more kept queries than slots: fetch the window's full outputs
            chosen = np.asarray(outputs["kept"][index])
            instances.append((np.asarray(outputs["all_probs"][index])[chosen],
                              np.asarray(outputs["all_logits"][index])[chosen], None))
    seconds["device_wait"] += time.perf_counter() - begin
    return instances


@dataclass(frozen=True)
class WindowCall:
    """One call of `run_windows`: the windows starting in chunk `chunk` (a video frame index
    start // chunk_frames), run as a batch of `batch` >= len(starts) windows."""

    chunk: int
    starts: tuple[int, ...]
    batch: int


def call_sizes(windows_per_call: int) -> tuple[int, ...]:
    """Batch sizes `run_windows` is compiled for: windows_per_call and the powers of two
    below it (a chunk's last few windows run in the smallest size that holds them)."""
    sizes = {windows_per_call}
    size = 1
    while size < windows_per_call:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def plan_calls(num_frames: int, window_frames: int, window_stride: int, chunk_frames: int,
               windows_per_call: int) -> list[WindowCall]:
    """The window calls of a video, in order of window start (see the module docstring)."""
    by_chunk: dict[int, list[int]] = {}
    for start, _ in window_bounds(num_frames, window_frames, window_stride):
        by_chunk.setdefault(start // chunk_frames, []).append(start)
    sizes = call_sizes(windows_per_call)
    calls = []
    for chunk, starts in by_chunk.items():
        for first in range(0, len(starts), windows_per_call):
            group = tuple(starts[first:first + windows_per_call])
            calls.append(WindowCall(chunk, group, min(s for s in sizes if s >= len(group))))
    return calls


@dataclass
class VideoPrediction:
    """Tracks of one video: (K+1,) mean class probabilities and per-frame RLEs, in order."""

    class_probs: list[np.ndarray]
    segmentations: list[list[dict]]
    num_windows: int
    seconds: dict[str, float] = field(default_factory=dict)


class _FrameMasks:
    """The RLEs of a video's final (track, frame) pairs, encoded on a thread pool.

    `add` queues a batch of mean stride-8 logits; `segmentations` waits for every batch and
    returns a track's per-frame RLE list (the empty RLE where the track has no mask).
    """

    def __init__(self, upsampler: RleUpsampler | device_rle.DeviceRleEncoder, num_frames: int,
                 pool: concurrent.futures.Executor | None, threads: int,
                 seconds: dict[str, float]):
        self._upsampler, self._num_frames, self._pool = upsampler, num_frames, pool
        self._threads = threads
        self._seconds = seconds
        self._jobs: list[tuple[list[tuple[int, int]], Any]] = []
        self._frames: dict[int, dict[int, dict]] = {}
        self._empty = empty_rle(*upsampler.output_size)
        self._lock = threading.Lock()

    def _encode(self, logits: np.ndarray) -> list[dict]:
        begin = time.perf_counter()
        rles = self._upsampler(logits)
        with self._lock:
            self._seconds["masks_rle"] += time.perf_counter() - begin
        return rles

    def add(self, keys: list[tuple[int, int]], stacked: np.ndarray | None) -> None:
        """Encodes the masks of `keys` from their (len(keys), h8, w8) mean logits."""
        if not keys:
            return
        if self._pool is None:
            self._jobs.append((keys, self._encode(stacked)))
            return
        # A large batch (an offline window's frames) is split so that it uses every thread; a
        # small one (a near-online window's frame) stays one job, as every job has a fixed
        # cost: consecutive windows' jobs run side by side instead.
        parts = max(1, min(self._threads, len(keys) // MASKS_PER_JOB))
        # np.array_split's parts (the first len % parts one longer), as slices: views, where
        # its index arrays copied the whole batch.
        size, longer = divmod(len(keys), parts)
        bounds = [part * size + min(part, longer) for part in range(parts + 1)]
        for first, end in zip(bounds[:-1], bounds[1:], strict=True):
            self._jobs.append((keys[first:end],
                               self._pool.submit(self._encode, stacked[first:end])))

    def segmentations(self, track_id: int) -> list[dict]:
        """The per-frame RLEs of a track (waits for the jobs still running)."""
        for keys, job in self._jobs:
            rles = job.result() if isinstance(job, concurrent.futures.Future) else job
            for (track, frame), rle in zip(keys, rles, strict=True):
                self._frames.setdefault(track, {})[frame] = rle
        self._jobs = []
        frames = self._frames.get(track_id, {})
        return [frames.get(t, self._empty) for t in range(self._num_frames)]


class PendingPrediction:
    """A video whose device calls are all dispatched and whose host side may still be running:
    `result()` completes it (waits for the last calls' outputs and tracks their windows on the
    calling thread, then waits for the masks the host threads encode). Meanwhile the caller
    can submit the next video, so the device computes it while this one's host side
    completes."""

    def __init__(self, complete: Callable[[], tuple[list[Any], _FrameMasks, int]],
                 seconds: dict[str, float]):
        self._complete, self._seconds = complete, seconds
        self._prediction: VideoPrediction | None = None

    def result(self) -> VideoPrediction:
        if self._prediction is None:
            tracks, masks, num_windows = self._complete()
            begin = time.perf_counter()
            segmentations = [masks.segmentations(track.track_id) for track in tracks]
            self._seconds["rle_wait"] = time.perf_counter() - begin
            self._prediction = VideoPrediction(
                class_probs=[track.class_probs for track in tracks],
                segmentations=segmentations, num_windows=num_windows, seconds=self._seconds)
        return self._prediction


class _FinishedFrames:
    """The (track, frame) keys and mean logits the tracker finished since the last `take`."""

    def __init__(self):
        self._keys: list[tuple[int, int]] = []
        self._logits: list[np.ndarray] = []  # (n, h8, w8) each, float64 or float32

    def add(self, track_id: int, frame_index: int, logits: np.ndarray) -> None:
        self._keys.append((track_id, frame_index))
        self._logits.append(logits[None])

    def add_window(self, track_ids: list[int], start: int, logits: np.ndarray) -> None:
        """A window's frames at once: logits (n, T', h8, w8), row i of track track_ids[i]."""
        length = logits.shape[1]
        self._keys.extend((track_id, start + offset)
                          for track_id in track_ids for offset in range(length))
        self._logits.append(logits.reshape(-1, *logits.shape[2:]))

    def take(self) -> tuple[list[tuple[int, int]], np.ndarray | None]:
        """The keys and their (len(keys), h8, w8) logits (None for no keys): float32 when all
        came in one window's block (`ClipTracker`'s held windows), else float64; the mask
        encoders take either (the values are the same)."""
        keys, logits = self._keys, self._logits
        self._keys, self._logits = [], []
        if len(logits) <= 1:
            return keys, logits[0] if logits else None
        return keys, np.concatenate(logits)


class VideoTracking:
    """The host side of one video: windows' kept instances into `ClipTracker`, each frame it
    finishes into RLEs at the original size on the thread pool (`mask_encoder(..., mask_rle,
    device)` straight from the stride-8 mean logits). `finish()` returns the
    PendingPrediction."""

    def __init__(self, num_frames: int, match_threshold: float, valid_size: tuple[int, int],
                 output_size: tuple[int, int], pool: concurrent.futures.Executor | None,
                 threads: int, seconds: dict[str, float], mask_rle: str = "host",
                 device: jax.Device | None = None):
        self._seconds = seconds
        self._masks = _FrameMasks(mask_encoder(valid_size, output_size, mask_rle, device),
                                  num_frames, pool, threads, seconds)
        self._finished = _FinishedFrames()
        # The tracker calls the collector, not this object: a bound method of this object
        # would make a reference cycle, and every video's tracks and RLEs would wait for the
        # garbage collector (whose passes then cost more the more results are held).
        self._tracker = ClipTracker(num_frames, match_threshold, self._finished.add,
                                    valid_size=valid_size,
                                    on_final_window=self._finished.add_window)

    def add_window(self, start: int, class_probs: np.ndarray, mask_logits: np.ndarray,
                   mask_probs: np.ndarray | None = None) -> None:
        """A window's kept instances: (n, K+1) probs, (n, T', h8, w8) logits and, if the
        device computed them, their sigmoids."""
        begin = time.perf_counter()
        self._tracker.add_window(start, class_probs, mask_logits, mask_probs)
        self._seconds["tracking"] += time.perf_counter() - begin

    def flush(self) -> None:
        """Hands the frames finished so far to the thread pool."""
        self._masks.add(*self._finished.take())

    def complete(self, num_windows: int) -> tuple[list[Any], _FrameMasks, int]:
        """Finishes the tracks and hands their last frames to the thread pool: (tracks, their
        masks, num_windows), as `PendingPrediction` completes a video."""
        begin = time.perf_counter()
        tracks = self._tracker.finish()
        self._seconds["tracking"] += time.perf_counter() - begin
        self.flush()
        return tracks, self._masks, num_windows

    def finish(self, num_windows: int) -> PendingPrediction:
        """After the last window: the PendingPrediction of the video."""
        return PendingPrediction(lambda: self.complete(num_windows), self._seconds)


class VideoPredictor:
    """Runs a trained IFC over videos. One instance serves many videos (compiled once per
    input size and call size). `variables` is an argument of the compiled programs, not a
    constant in them: assigning new variables of the same shapes (evaluation during training
    does) reuses the compiled programs. `on_device` gives a copy that runs on another device
    with the same compiled functions."""

    def __init__(self, model: IFC, variables: Any, *, window_frames: int, window_stride: int,
                 match_threshold: float, windows_per_call: int = 8, host_threads: int = 2,
                 pad_size_multiple: int = 0, mask_rle: str = "auto"):
        """window_frames T, window_stride S, match_threshold, windows_per_call, host_threads,
        pad_size_multiple and mask_rle as in `config.inference` (docs/inference.md);
        `from_config` reads them from there."""
        if windows_per_call < 1 or host_threads < 0 or pad_size_multiple < 0:
            raise ValueError("windows_per_call must be >= 1, host_threads and "
                             "pad_size_multiple >= 0")
        if mask_rle not in MASK_RLE_PATHS:
            raise ValueError(f"mask_rle must be one of {MASK_RLE_PATHS}, got {mask_rle!r}")
        self.pad_size_multiple = pad_size_multiple
        self.mask_rle = mask_rle
        self.device: jax.Device | None = None  # None: JAX's default device
        self.model = model
        self.variables = variables
        self.window_frames = window_frames
        self.window_stride = window_stride
        self.match_threshold = match_threshold
        # Near-online windows overlap: a chunk of several strides holds the starts of several
        # windows, run in one call. Offline windows (S = T) run one per chunk of T frames.
        self.windows_per_call = 1 if window_stride >= window_frames else windows_per_call
        self.chunk_frames = max(window_frames, self.windows_per_call * window_stride)
        self.host_threads = rle_threads(host_threads, jax.default_backend(), available_cores())
        self._pool = (concurrent.futures.ThreadPoolExecutor(self.host_threads,
                                                            thread_name_prefix="ifc-rle")
                      if self.host_threads else None)
        # The jitted device programs (benchmarks time them and count their FLOPs):
        # encode_frames(variables, frames (C, H, W, 3), padding (C, H, W)) -> features;
        # run_windows(variables, chunk features, next chunk's features, offsets (B,),
        #             lengths (B,), valid_size=(h8, w8)) -> kept instances of B windows;
        # run_window(variables, features of T frames, frame_valid (T,)) ->
        #   (class probs (N, K+1), mask logits (N, T, H/8, W/8)): one window, uncropped.
        # `variables` may be a tree or `PackedVariables` (what the predictor itself passes).
        self.encode_frames = jax.jit(
            lambda v, f, p: model.apply(unpacked(v), f, p, method=IFC.frame_features))
        self.run_windows = jax.jit(self._run_windows, static_argnames=("valid_size",))

        def run_window(v, features, frame_valid):
            outputs = model.apply(unpacked(v), jax.tree.map(lambda x: x[None], features),
                                  frame_valid=frame_valid[None], method=IFC.clip_outputs)
            probs = jax.nn.softmax(outputs["pred_logits"][-1, 0], axis=-1)
            return probs, outputs["pred_masks"][-1, 0]

        self.run_window = jax.jit(run_window)

    @property
    def variables(self) -> Any:
        """The model's variables tree (unpacked anew on each read; None if unset)."""
        return None if self._packed is None else self._packed.unpack()

    @variables.setter
    def variables(self, variables: Any) -> None:
        # Kept packed (`PackedVariables`): each call of the jitted programs then hands a few
        # buffers to the device instead of every leaf. None frees them.
        self._packed = None if variables is None else PackedVariables.pack(variables)

    @property
    def packed_variables(self) -> PackedVariables | None:
        """The variables as the predictor passes them to its jitted programs: calling those
        with this (not the tree) reuses their compiled programs."""
        return self._packed

    @classmethod
    def from_config(cls, model: IFC, variables: Any, inference_config: Any,
                    **overrides: Any) -> VideoPredictor:
        """The predictor of a validated `config.inference`, with `overrides` of any of the
        constructor's keyword arguments (the benchmarks set their own windows)."""
        settings = {name: inference_config[name]
                    for name in ("window_frames", "window_stride", "match_threshold",
                                 "windows_per_call", "host_threads", "pad_size_multiple",
                                 "mask_rle")}
        return cls(model, variables, **{**settings, **overrides})

    def on_device(self, device: jax.Device) -> VideoPredictor:
        """A predictor running on `device`: the variables copied there, the compiled
        functions and the RLE thread pool shared with this one."""
        other = copy.copy(self)
        other._packed = jax.device_put(self._packed, device)
        other.device = device
        return other

    def _run_windows(self, variables: Any, first: dict[str, jax.Array],
                     second: dict[str, jax.Array], offsets: jax.Array, lengths: jax.Array,
                     valid_size: tuple[int, int]) -> dict[str, jax.Array]:
        """B windows cut from two consecutive chunks' features (C frames each): window b is
        frames offsets[b] .. offsets[b] + T of the two, its first lengths[b] frames real.

        Returns count (B,) kept queries; probs (B, S, K+1), logits (B, S, T, h8, w8) and
        mask_probs (their float32 sigmoids) of the first S = min(N, KEPT_SLOTS) queries with
        the kept ones first (in query order); kept (B, N), all_probs (B, N, K+1), all_logits
        (B, N, T, h8, w8) for windows keeping more than S (fetched only then). Logits are
        cropped to the frame's stride-8 cells.
        """
        slab = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)
        windows = jax.vmap(lambda offset: jax.tree.map(
            lambda x: jax.lax.dynamic_slice_in_dim(x, offset, self.window_frames), slab))(
                offsets)
        frame_valid = jnp.arange(self.window_frames)[None, :] < lengths[:, None]
        # A window's frames past its length are fully padded, as `clip_outputs` requires: a
        # video's last chunk holds blank filler frames there, a packed chunk
        # (`packing.PackedVideos`) the next video's frames.
        windows["mask"] = windows["mask"] | ~frame_valid[:, :, None, None]
        outputs = self.model.apply(unpacked(variables), windows, frame_valid=frame_valid,
                                   method=IFC.clip_outputs)
        probs = jax.nn.softmax(outputs["pred_logits"][-1], axis=-1)  # (B, N, K+1)
        logits = outputs["pred_masks"][-1][..., :valid_size[0], :valid_size[1]]
        kept = jnp.argmax(probs, axis=-1) != probs.shape[-1] - 1
        slots = min(KEPT_SLOTS, probs.shape[1])
        order = jnp.argsort(~kept, axis=-1, stable=True)[:, :slots]  # kept first, in order
        kept_logits = jnp.take_along_axis(logits, order[..., None, None, None], axis=1)
        return {
            "count": kept.sum(-1),
            "probs": jnp.take_along_axis(probs, order[..., None], axis=1),
            "logits": kept_logits,
            # The tracker's mask probabilities (its soft IoU), elementwise work the host
            # would otherwise do for every kept instance of every window.
            "mask_probs": jax.nn.sigmoid(kept_logits.astype(jnp.float32)),
            "kept": kept, "all_probs": probs, "all_logits": logits,
        }

    def tracking(self, num_frames: int, resized_size: tuple[int, int],
                 output_size: tuple[int, int], seconds: dict[str, float]) -> VideoTracking:
        """The host side of one `num_frames` video given to the model at `resized_size`, its
        masks made at `output_size`, its stage times added to `seconds`."""
        return VideoTracking(num_frames, self.match_threshold, stride8_valid_size(*resized_size),
                             output_size, self._pool, self.host_threads, seconds, self.mask_rle,
                             self.device)

    def plan(self, num_frames: int) -> list[WindowCall]:
        """The window calls of a `num_frames` video."""
        return plan_calls(num_frames, self.window_frames, self.window_stride,
                          self.chunk_frames, self.windows_per_call)

    def _call_inputs(self, call: WindowCall, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """offsets and lengths (B,) int32 of a call's windows in its two chunks; the filler
        windows of a batch larger than the call repeat its first window (outputs unused)."""
        offsets = np.zeros(call.batch, np.int32)
        lengths = np.zeros(call.batch, np.int32)
        for index, start in enumerate(call.starts):
            offsets[index] = start - call.chunk * self.chunk_frames
            lengths[index] = min(self.window_frames, num_frames - start)
        offsets[len(call.starts):], lengths[len(call.starts):] = offsets[0], lengths[0]
        return offsets, lengths

    def _chunks(self, frames: Iterable[np.ndarray], height: int, width: int,
                seconds: dict[str, float], read: list[int]) -> Iterator[dict[str, jax.Array]]:
        """Features of each chunk of chunk_frames frames in order (dispatched, not awaited);
        the last chunk is padded in time with blank frames, every frame in space up to
        `padded_input_size`. read[0] counts the frames read."""
        chunk = self.chunk_frames
        input_size = padded_input_size(height, width, self.pad_size_multiple)
        frame_size = None if input_size == (height, width) else (height, width)
        buffer = blank_chunk(chunk, input_size, frame_size)
        count = 0
        for frame in checked_frames(frames, height, width, seconds):
            buffer[count, :height, :width] = frame
            count += 1
            read[0] += 1
            if count == chunk:
                yield self.encode_chunk(buffer, frame_size, seconds)
                buffer = blank_chunk(chunk, input_size, frame_size)
                count = 0
        if count:
            yield self.encode_chunk(buffer, frame_size, seconds, count)

    def encode_chunk(self, frames: np.ndarray, frame_size: tuple[int, int] | None,
                     seconds: dict[str, float], count: int | None = None
                     ) -> dict[str, jax.Array]:
        """Dispatches `encode_frames` on F <= chunk_frames frames (`pad_chunk`'s arguments);
        the dispatch time is added to seconds["dispatch_chunks"]. Returns the chunk's
        features."""
        begin = time.perf_counter()
        features = self.encode_frames(self._packed,
                                      *pad_chunk(frames, self.chunk_frames, frame_size, count))
        seconds["dispatch_chunks"] += time.perf_counter() - begin
        return features

    def dispatch_windows(self, first: dict[str, jax.Array], second: dict[str, jax.Array],
                         offsets: np.ndarray, lengths: np.ndarray, valid_size: tuple[int, int],
                         seconds: dict[str, float]) -> dict[str, jax.Array]:
        """Dispatches `run_windows` (its arguments) and starts copying the kept instances to
        the host; the times go to seconds["dispatch_windows"] and seconds["copy_start"].
        Returns the outputs."""
        begin = time.perf_counter()
        outputs = self.run_windows(self._packed, first, second, offsets, lengths,
                                   valid_size=valid_size)
        dispatched = time.perf_counter()
        seconds["dispatch_windows"] += dispatched - begin
        for name in OUTPUTS_COPIED:
            outputs[name].copy_to_host_async()
        seconds["copy_start"] += time.perf_counter() - dispatched
        return outputs

    def predict(self, frames: Iterable[np.ndarray], num_frames: int,
                resized_size: tuple[int, int], output_size: tuple[int, int]) -> VideoPrediction:
        """Tracks of one video (`submit`'s arguments), once all its masks are encoded."""
        return self.submit(frames, num_frames, resized_size, output_size).result()

    def submit(self, frames: Iterable[np.ndarray], num_frames: int,
               resized_size: tuple[int, int], output_size: tuple[int, int]
               ) -> PendingPrediction:
        """Reads one video and dispatches all its device calls, tracking the windows whose
        outputs are back; returns with the last calls in flight and the host threads encoding
        masks. `PendingPrediction.result()` completes it: submitting the next video first keeps
        the device busy while this one's host side finishes, as `evaluate` does.

        Args:
          frames: the video's frames in order, each (h, w, 3) uint8 RGB at `resized_size`.
          num_frames: how many frames `frames` yields.
          resized_size: (h, w) of the frames given to the model.
          output_size: (H, W) of the original video: masks are produced at this size.
        """
        height, width = resized_size
        # The device crops the logits to the stride-8 cells of its input (one program per
        # input size); the tracker crops them to the frame's own cells.
        device_cells = stride8_valid_size(*padded_input_size(height, width,
                                                              self.pad_size_multiple))
        seconds = dict.fromkeys(STAGES, 0.0)
        read = [0]  # frames read from `frames` so far
        tracking = self.tracking(num_frames, resized_size, output_size, seconds)
        calls = self.plan(num_frames)
        chunks = self._chunks(frames, height, width, seconds, read)
        stored: dict[int, dict[str, jax.Array]] = {}
        in_flight: deque[tuple[WindowCall, dict[str, jax.Array]]] = deque()

        encoded = [0]  # chunks encoded so far

        def chunk_features(index: int) -> dict[str, jax.Array]:
            while encoded[0] <= index:
                try:
                    stored[encoded[0]] = next(chunks)
                except StopIteration:
                    break
                encoded[0] += 1
            if index not in stored:
                raise ValueError(f"the video yielded {read[0]} frames, expected {num_frames}")
            return stored[index]

        def finish_call() -> None:
            call, outputs = in_flight.popleft()
            for index, (probs, logits, mask_probs) in enumerate(
                    kept_instances(outputs, len(call.starts), seconds)):
                start = call.starts[index]
                length = min(self.window_frames, num_frames - start)
                tracking.add_window(start, probs, logits[:, :length],
                                    None if mask_probs is None else mask_probs[:, :length])
            tracking.flush()

        last_chunk = (num_frames - 1) // self.chunk_frames
        for call in calls:
            first = chunk_features(call.chunk)
            second = chunk_features(call.chunk + 1) if call.chunk < last_chunk else first
            for index in [i for i in stored if i < call.chunk]:
                del stored[index]  # no later window starts before this chunk
            outputs = self.dispatch_windows(first, second, *self._call_inputs(call, num_frames),
                                            device_cells, seconds)
            in_flight.append((call, outputs))
            if len(in_flight) > CALLS_IN_FLIGHT:
                finish_call()
        if next(chunks, None) is not None:
            raise ValueError(f"the video yielded more than the {num_frames} frames expected")
        if read[0] != num_frames:
            raise ValueError(f"the video yielded {read[0]} frames, expected {num_frames}")
        stored.clear()
        num_windows = sum(len(call.starts) for call in calls)

        def complete() -> tuple[list[Any], _FrameMasks, int]:
            # The calls still in flight: the caller may have submitted the next video first.
            while in_flight:
                finish_call()
            return tracking.complete(num_windows)

        return PendingPrediction(complete, seconds)

    def encode_video(self, frames: np.ndarray) -> list[dict[str, jax.Array]]:
        """The `encode_frames` calls `predict` makes for a video in memory (F, h, w, 3),
        dispatched without waiting: the features of each chunk."""
        chunk = self.chunk_frames
        return [self.encode_frames(self._packed, *pad_chunk(frames[first:first + chunk],
                                                              chunk))
                for first in range(0, len(frames), chunk)]

    def run_video_windows(self, features: list[dict[str, jax.Array]], num_frames: int,
                          resized_size: tuple[int, int]) -> list[dict[str, jax.Array]]:
        """The `run_windows` calls `predict` makes on a video's chunk features, dispatched
        without any host work or waiting (benchmarks time them); their outputs."""
        valid_size = stride8_valid_size(*resized_size)
        outputs = []
        for call in self.plan(num_frames):
            second = features[min(call.chunk + 1, len(features) - 1)]
            outputs.append(self.run_windows(self._packed, features[call.chunk], second,
                                            *self._call_inputs(call, num_frames),
                                            valid_size=valid_size))
        return outputs
