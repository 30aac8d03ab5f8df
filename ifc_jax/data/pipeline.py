"""tf.data pipeline: endless training batches of static shape.

Training batch (one process's share; B = global batch size / process count, T = num_frames,
H x W = config.data.pad_height x pad_width, N = config.data.max_instances):

  frames          uint8 (B, T, H, W, 3)   RGB 0..255, zero in the padding
  padding_mask    bool  (B, T, H, W)      True = padded pixel (same for the T frames of a clip)
  labels          int32 (B, N)            contiguous class index 0..K-1; 0 in invalid slots
  instance_valid  bool  (B, N)            slot holds an instance
  target_counts   uint8 (B, N, T, H/4, W/4)  stride-4 targets as counts 0..4 of the set pixels
                                          among each 4x4 block's centre 2x2 of the padded
                                          binary mask (clips.stride4_counts); the train step's
                                          soft target is count / 4; 0 where absent or invalid
  present         bool  (B, N, T)         instance visible in that frame (non-empty mask)
  frame_indices   int32 (B, T)            sampled frame indices in the source video (sorted)
  video_id        int32 (B,)              the dataset's video id
  track_ids       int32 (B, N)            annotation id per slot; -1 in invalid slots
  image_size      int32 (B, 2)            resized (h, w) of the clip before padding

The full-resolution instance masks are not in the batch: the train step reads only their
stride-4 targets, and at the paper's shapes (N=25, T=5, 480x864) a clip's masks are 52 MB
against 3.2 MB of counts, to hold in the prefetch buffers and to copy to the device.

Sampling, resizing, flipping and target rules are in clips.py; which video each clip comes
from (per-process sharding, order from (seed, epoch)) in schedule.py. Every clip is built by
numpy/PIL code inside `tf.numpy_function`, in parallel, deterministic in order; so a broken
frame or annotation is raised as one `UserError` line (see `numpy_batches`), never as a
TensorFlow graph traceback. Hand the batches to `global_batch.make_global_batch`.

Evaluation needs no tf.data: `sources.iterate_eval_videos` decodes whole videos on threads.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import re
import weakref
from typing import Any

import numpy as np

from ifc_jax.data import clips, sources
from ifc_jax.data.schedule import TrainSchedule
from ifc_jax.data.ytvis import YtvisDataset
from ifc_jax.host import available_cores
from ifc_jax.io import UserError

_ERROR_TAG = "IFC_DATA_ERROR"
_ERROR_PATTERN = re.compile(rf"<<{_ERROR_TAG}:(.*?)>>")

# Field name, dtype name, shape of one clip in symbols (T frames, N instance slots, H x W
# padded size, H/4 x W/4 the targets' grid); the order of numpy_function's outputs.
TRAIN_FIELDS = (
    ("frames", "uint8", ("T", "H", "W", 3)),
    ("padding_mask", "bool", ("T", "H", "W")),
    ("labels", "int32", ("N",)),
    ("instance_valid", "bool", ("N",)),
    ("target_counts", "uint8", ("N", "T", "H/4", "W/4")),
    ("present", "bool", ("N", "T")),
    ("frame_indices", "int32", ("T",)),
    ("video_id", "int32", ()),
    ("track_ids", "int32", ("N",)),
    ("image_size", "int32", (2,)),
)


def clip_shapes(settings: clips.ClipSettings) -> dict[str, tuple[int, ...]]:
    """Shape of every field of one training clip (add the batch axis in front for a batch)."""
    sizes = {"T": settings.num_frames, "N": settings.max_instances,
             "H": settings.pad_height, "W": settings.pad_width,
             "H/4": settings.pad_height // clips.TARGET_STRIDE,
             "W/4": settings.pad_width // clips.TARGET_STRIDE}
    return {name: tuple(sizes.get(d, d) for d in shape) for name, _, shape in TRAIN_FIELDS}


def import_tensorflow():
    """Imports TensorFlow quietly and hides the GPUs from it (they belong to JAX)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    # RuntimeError: TF already initialised its devices; nothing to hide any more.
    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")
    return tf


def _process_defaults(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return process_index, process_count


def _tagged_user_errors(function):
    """Wraps a numpy_function body so a UserError survives TF's error wrapping as a tag."""

    def wrapper(*args):
        try:
            return function(*args)
        except UserError as err:
            raise RuntimeError(f"<<{_ERROR_TAG}:{err}>>") from None

    return wrapper


class NumpyIterator:
    """Iterates a tf.data dataset as numpy dicts; tagged data errors become one UserError.

    Why a class: a tf.data iterator still alive when Python shuts down can hang the exit (its
    threads wait for a GIL that finalisation never hands out again). Every NumpyIterator is
    closed by an atexit hook, while the interpreter is still whole; `close()` does it early.
    """

    def __init__(self, dataset):
        self._tf = import_tensorflow()
        self._iterator = dataset.as_numpy_iterator()
        _LIVE_ITERATORS.add(self)

    def __iter__(self) -> NumpyIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            raise StopIteration
        try:
            return next(self._iterator)
        except self._tf.errors.OpError as err:
            match = _ERROR_PATTERN.search(err.message or "")
            if match is None:
                raise
            raise UserError(match.group(1)) from None

    def close(self) -> None:
        """Stops the pipeline's threads and frees its buffers."""
        self._iterator = None
        gc.collect()


_LIVE_ITERATORS: weakref.WeakSet[NumpyIterator] = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
    for iterator in list(_LIVE_ITERATORS):
        iterator.close()


def numpy_batches(dataset) -> NumpyIterator:
    """Numpy iterator over a tf.data dataset (see NumpyIterator); use it, not as_numpy_iterator."""
    return NumpyIterator(dataset)


def make_train_dataset(dataset: YtvisDataset, settings: clips.ClipSettings, *,
                       batch_size: int, seed: int, start_batch: int = 0,
                       process_index: int | None = None, process_count: int | None = None,
                       num_parallel_calls: int = -1, prefetch_batches: int = 2):
    """Endless tf.data stream of training batches for this process (format: module docstring).

    Args:
      dataset: the training split (must have annotations).
      settings: clip sampling / augmentation / padding settings.
      batch_size: clips per batch on THIS process.
      seed: with the epoch, fixes the video order and every clip's random choices.
      start_batch: skip this many batches (resume); batch k is the same whatever start_batch.
      process_index, process_count: default to jax.process_index() / jax.process_count().
      num_parallel_calls: clips built concurrently (-1 = one per CPU core up to 16,
        `parallel_calls`).
      prefetch_batches: batches prepared ahead of the consumer (>= 0).
    """
    tf = import_tensorflow()
    if not dataset.has_annotations:
        raise UserError(f"{dataset.json_path}: has no 'annotations'; it cannot be used for "
                        "training")
    process_index, process_count = _process_defaults(process_index, process_count)
    schedule = TrainSchedule(len(dataset.videos), seed, process_index, process_count)
    shapes = clip_shapes(settings)

    @_tagged_user_errors
    def load_clip(clip_number: np.ndarray) -> list[np.ndarray]:
        epoch, position = schedule.locate(int(clip_number))
        video = dataset.videos[position]
        plan = clips.plan_clip(schedule.clip_rng(epoch, position), video.length, settings,
                               (video.height, video.width))
        clip = clips.build_train_clip(video, plan, settings, source=dataset.json_path)
        return [clip[name] for name, _, _ in TRAIN_FIELDS]

    def to_dict(clip_number):
        return _numpy_function_dict(tf, load_clip, clip_number, TRAIN_FIELDS, shapes)

    stream = tf.data.Dataset.counter(start=start_batch * batch_size)
    stream = stream.map(to_dict, num_parallel_calls=parallel_calls(num_parallel_calls),
                        deterministic=True)
    stream = stream.batch(batch_size, drop_remainder=True)
    stream = stream.prefetch(prefetch_batches)
    # No autotuning: with it, destroying the iterator (the end of every run, a preempted job's
    # exit) waited on one of tf.data's threads, for many seconds per process of a
    # multi-process job; without it, at once. Fixed sizes lost no clips/s on
    # `benchmark --what data`.
    options = tf.data.Options()
    options.autotune.enabled = False
    return stream.with_options(options)


def _numpy_function_dict(tf, function, argument, fields, shapes: dict[str, Any]) -> dict:
    """Runs numpy `function(argument)` inside tf.data; its outputs, in `fields` order, as a
    dict of tensors with the static `shapes` set (tf.numpy_function loses them)."""
    outputs = tf.numpy_function(function, [argument],
                                [tf.as_dtype(dtype) for _, dtype, _ in fields], stateful=False)
    element = {}
    for (name, _, _), tensor in zip(fields, outputs, strict=True):
        tensor.set_shape(shapes[name])
        element[name] = tensor
    return element


# The default's bound on many-core hosts (tf.data's own starting parallelism): every call holds
# a clip in memory, and the Python/numpy parts of a clip share one GIL.
MAX_DEFAULT_CALLS = 16


def parallel_calls(setting: int) -> int:
    """Clips built concurrently for `config.data.num_parallel_calls`: -1 = one per CPU core this
    process may use, at most MAX_DEFAULT_CALLS."""
    return min(available_cores(), MAX_DEFAULT_CALLS) if setting < 0 else setting


def train_batches(config: Any, *, start_batch: int = 0, process_index: int | None = None,
                  process_count: int | None = None,
                  dataset: YtvisDataset | None = None) -> NumpyIterator:
    """Numpy training batches for this process from a full config (data + train sections).

    The global `config.train.batch_size` is split evenly over the processes.
    """
    process_index, process_count = _process_defaults(process_index, process_count)
    global_batch = int(config.train.batch_size)
    if global_batch % process_count:
        raise UserError(f"config.train.batch_size={global_batch} is not divisible by the "
                        f"{process_count} processes")
    dataset = dataset or sources.load_split(config.data, "train")
    stream = make_train_dataset(
        dataset, clips.ClipSettings.from_config(config.data),
        batch_size=global_batch // process_count, seed=int(config.train.seed),
        start_batch=start_batch, process_index=process_index, process_count=process_count,
        num_parallel_calls=config.data.num_parallel_calls,
        prefetch_batches=config.data.prefetch_batches)
    return numpy_batches(stream)
