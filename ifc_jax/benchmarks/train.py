"""Train-step speed (clips/s) at a config's training shapes, with its roofline.

The model, optimiser, state and jitted step are built exactly as `train/loop.py` builds them
(`IFC.from_config`, `build_optimizer`, `initial_state`, `build_train_step` with the config's
`train.matcher`, on a mesh of all local devices, the batch sharded over it by
`make_global_batch`). The batch is synthetic but image-like: `train.batch_size` (or
--batch-size) clips of `data.num_frames` frames padded to `data.pad_height x data.pad_width`,
every second clip's content smaller than the pad (so padding is exercised), each with 1..5
moving toy shapes whose visible masks (as the pipeline ships them: stride-4 `target_counts`) and
classes are the ground truth in `data.max_instances` slots (the rest invalid). Random weights:
speed does not depend on them.

Input bytes: the sum of `nbytes` of the global batch's arrays (the fields of
`train.step.MODEL_INPUTS`), what every step copies from the host to the devices; reported per
field too. It depends on the shapes only, not on the compute dtype.

Timing: compilation (lower + compile, reported apart), then --warmup untimed steps, then
--batches steps, each blocked on its result; median and mean step time, clips/s and frames/s
from the median. FLOPs per step are counted from the traced step (`benchmarks/roofline.py`):
forward, backward and optimiser, 2 FLOPs per multiply-add, with the forward pass alone beside.

  python main.py benchmark --what train --json --batches 2 --warmup 1       # tiny, CPU
  python main.py benchmark --what train --config configs/ifc_r50_ytvis19.py \\
      --dtypes bfloat16 float32 --json                                      # recipe, GPU
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ifc_jax.benchmarks.synthetic_video import synthetic_video
from ifc_jax.data.clips import TARGET_STRIDE, stride4_counts

MAX_OBJECTS = 5  # per synthetic clip (YouTube-VIS clips hold a few instances)


def synthetic_batch(batch_size: int, num_frames: int, height: int, width: int,
                    max_instances: int, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A training batch of `synthetic_video` clips with their ground truth.

    Returns frames uint8 (B, T, H, W, 3), padding_mask bool (B, T, H, W), labels int32 (B, G),
    instance_valid bool (B, G), target_counts uint8 (B, G, T, H/4, W/4) (`stride4_counts` of
    the visible masks, as data/pipeline.py ships them) with G = max_instances; odd clips have
    3/4-size content at the top-left (the rest padding), even clips fill the frame.
    """
    rng = np.random.default_rng(seed)
    frames = np.zeros((batch_size, num_frames, height, width, 3), np.uint8)
    padding = np.ones((batch_size, num_frames, height, width), bool)
    labels = np.zeros((batch_size, max_instances), np.int32)
    valid = np.zeros((batch_size, max_instances), bool)
    counts = np.zeros((batch_size, max_instances, num_frames, height // TARGET_STRIDE,
                       width // TARGET_STRIDE), np.uint8)
    for clip in range(batch_size):
        clip_height, clip_width = ((height, width) if clip % 2 == 0
                                   else (max(32, height * 3 // 4), max(32, width * 3 // 4)))
        clip_height, clip_width = min(clip_height, height), min(clip_width, width)
        objects = int(rng.integers(1, max(2, min(max_instances, MAX_OBJECTS + 1))))
        objects = min(objects, max_instances)
        classes, video = synthetic_video(num_frames, clip_height, clip_width,
                                         seed=seed * 1000 + clip, num_objects=objects)
        # One clip's padded masks at a time: the whole batch's would be 829 MB at the recipe's
        # shapes.
        masks = np.zeros((objects, num_frames, height, width), bool)
        for t, (frame, frame_masks) in enumerate(video):
            frames[clip, t, :clip_height, :clip_width] = frame
            padding[clip, t, :clip_height, :clip_width] = False
            masks[:, t, :clip_height, :clip_width] = frame_masks
        counts[clip, :objects] = stride4_counts(masks)
        labels[clip, :objects] = classes % num_classes
        valid[clip, :objects] = True
    return {"frames": frames, "padding_mask": padding, "labels": labels,
            "instance_valid": valid, "target_counts": counts}


def input_bytes(batch: Mapping[str, Any]) -> dict[str, int]:
    """nbytes of each array of a (global) batch: what one step copies to the devices."""
    return {name: int(array.nbytes) for name, array in batch.items()}


def _forward_counts(model: Any, state: dict[str, Any], batch: dict[str, Any]) -> Any:
    """MACs of the training forward alone (all decoder layers' heads; dropout is free)."""
    from ifc_jax.flops import count_flops

    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return count_flops(lambda v, f, p: model.apply(v, f, p, all_layers=True), variables,
                       batch["frames"], batch["padding_mask"])


def _global_batch(config: Any, mesh: Any, seed: int) -> dict[str, Any]:
    """This process's synthetic clips, made into the global batch the train step reads."""
    import jax

    from ifc_jax.data.global_batch import make_global_batch
    from ifc_jax.train.step import select_model_inputs

    data = config.data
    local = synthetic_batch(config.train.batch_size // jax.process_count(), data.num_frames,
                            data.pad_height, data.pad_width, data.max_instances,
                            config.model.num_classes, seed)
    return make_global_batch(select_model_inputs(local), mesh)


def _time_dtype(config: Any, dtype: str, batch: dict[str, Any], mesh: Any, steps: int,
                warmup: int, peak_size: int) -> dict[str, Any]:
    import jax

    from ifc_jax.benchmarks import roofline
    from ifc_jax.benchmarks.inference import with_dtype
    from ifc_jax.models.attention import select_implementation
    from ifc_jax.models.ifc import IFC
    from ifc_jax.train.loop import build_train_step, initial_state
    from ifc_jax.train.optim import build_optimizer

    config = with_dtype(config, dtype)
    data, train = config.data, config.train
    model = IFC.from_config(config.model)
    optimizer, schedule = build_optimizer(train, config.model.backbone.freeze_at)
    state = initial_state(config, model, optimizer, mesh)
    train_step = build_train_step(config, model, optimizer, schedule, mesh)

    # FLOPs before the first step donates the state. The host matcher is traced for the count
    # (the device solver's while loop has no static trip count; neither solver is counted).
    counted_step = (train_step if train.matcher == "host" else
                    build_train_step(config, model, optimizer, schedule, mesh, "host"))
    step_counts = roofline.train_step_counts(counted_step, state, batch)
    forward_counts = _forward_counts(model, state, batch)

    begin = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - begin
    for _ in range(warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(state)
    seconds = []
    for _ in range(steps):
        begin = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        seconds.append(time.perf_counter() - begin)
    median = statistics.median(seconds)
    clips = int(train.batch_size)
    step_flops = roofline.matrix_flops(step_counts)
    peak = roofline.measure_matmul_peak(dtype, peak_size)
    head_dim = int(config.model.hidden_dim) // int(config.model.num_heads)
    return {
        "dtype": dtype,
        "attention": select_implementation(model.dtype, head_dim),
        "compile_seconds": compile_seconds,
        "warmup_steps": warmup,
        "steps": len(seconds),
        "step_seconds": seconds,
        "median_step_seconds": median,
        "mean_step_seconds": statistics.fmean(seconds),
        "clips_per_s": clips / median,
        "frames_per_s": clips * int(data.num_frames) / median,
        "loss": float(metrics["loss"]),
        "peak": peak,
        "roofline": {
            "gflops_per_step": step_flops / 1e9,
            "gflops_per_clip": step_flops / clips / 1e9,
            "forward_gflops_per_clip": roofline.matrix_flops(forward_counts) / clips / 1e9,
            **roofline.achieved(step_flops, median, peak),
        },
    }


def benchmark_train(config: Any, *, steps: int, warmup: int, batch_size: int = 0,
                    dtypes: tuple[str, ...] = (), peak_size: int = 0, seed: int = 0
                    ) -> dict[str, Any]:
    """Times the train step at the config's shapes for each compute dtype; returns a dict."""
    import jax

    from ifc_jax.benchmarks import roofline
    from ifc_jax.train.loop import check_batch_split, make_mesh

    if batch_size:
        config.train.batch_size = batch_size
    check_batch_split(config.train.batch_size, jax.device_count(), jax.process_count())
    dtypes = roofline.check_dtypes(dtypes or (str(config.model.dtype),))
    mesh = make_mesh()
    # One batch for every dtype: the step donates its state, never its batch.
    batch = _global_batch(config, mesh, seed)
    shipped = input_bytes(batch)
    runs = [_time_dtype(config, dtype, batch, mesh, steps, warmup, peak_size)
            for dtype in dtypes]
    data = config.data
    return {
        "what": "train",
        "batch_size": int(config.train.batch_size),
        "num_frames": int(data.num_frames),
        "height": int(data.pad_height),
        "width": int(data.pad_width),
        "max_instances": int(data.max_instances),
        "matcher": str(config.train.matcher),
        "input_bytes_per_step": sum(shipped.values()),
        "input_bytes": shipped,
        "runs": runs,
        "model": roofline.model_info(config.model),
        "device": roofline.device_info(),
    }


def format_result(result: dict[str, Any]) -> str:
    """A table of step time, clips/s and roofline per compute dtype, and the input bytes."""
    from ifc_jax.benchmarks.roofline import format_peak
    from ifc_jax.io import format_table

    device = result["device"]
    input_mb = result["input_bytes_per_step"] / 1e6
    rows = []
    for run in result["runs"]:
        line = run["roofline"]
        rows.append([run["dtype"], run["attention"], f"{run['compile_seconds']:.1f}",
                     f"{1000 * run['median_step_seconds']:.1f}",
                     f"{1000 * run['mean_step_seconds']:.1f}", f"{run['clips_per_s']:.2f}",
                     f"{run['frames_per_s']:.1f}", f"{input_mb:.3g}",
                     f"{line['gflops_per_clip']:.3g}", f"{line['tflop_per_s']:.2f}",
                     f"{run['peak']['tflop_per_s']:.2f}",
                     f"{100 * line['fraction_of_peak']:.1f}"])
    fields = ", ".join(f"{name} {size:,}" for name, size in result["input_bytes"].items())
    return "\n".join(
        [f"train step: {result['batch_size']} clips x {result['num_frames']} frames at "
         f"{result['height']}x{result['width']}, {result['max_instances']} GT slots, "
         f"{result['matcher']} matcher, {result['config']}, random weights, "
         f"{device['platform']} ({device['kind']}) x{device['count']}",
         format_table(["dtype", "attention", "compile s", "median ms", "mean ms", "clips/s",
                       "frames/s", "input MB/step", "GFLOP/clip", "TFLOP/s", "peak TFLOP/s",
                       "% of peak"], rows),
         f"input bytes per step, host to devices: {fields}; "
         f"total {result['input_bytes_per_step']:,}"]
        + [f"{run['dtype']}: " + format_peak(run["peak"]) for run in result["runs"]])
