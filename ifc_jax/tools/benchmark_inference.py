"""Inference speed (frames/s) of whole-video prediction, near-online and offline (SPEC §8.6).

Measured the paper's way: wall time from the video's frames (decoded, resized, in memory) to
its final per-video results (backbone once per frame, every window's encoder/decoder/heads,
tracking, upsampling + RLE of every mask, the results entries) divided by the number of
frames. Two settings: near-online T=5, S=1 and offline T=36 (one window when the clip has
<= 36 frames; T = the clip length for shorter clips). Compilation is excluded: each setting
first predicts the same video once untimed. The share of the time in each stage comes from
`VideoPrediction.seconds`: frame_features (backbone, input projection, position),
windows (encoder, decoder, heads, the device -> host copy of a window's outputs), tracking,
masks_rle (upsampling to the output size, thresholding, RLE); "other" is the rest.

The model has random weights (speed does not depend on them, except that tracking and RLE
cost grow with the instances kept: a random class head keeps about K/(K+1) of the queries of
every window, more than a trained model does, so those two shares are on the high side). The
video is synthetic but image-like: a drifting textured background with moving, spinning
toy-dataset shapes and sensor noise. Frames are given to the model at --height x --width and
masks are produced at that size (no test-time resize).

  python main.py benchmark --what inference --json                    # tiny model, CPU
  python main.py benchmark --what inference --config configs/ifc_r50_ytvis19.py \\
      --height 360 --width 640 --frames 180 --json                    # the paper's model, GPU
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ifc_jax.data import toy

# (name, window_frames T, window_stride S)
SETTINGS = (("near_online", 5, 1), ("offline", 36, 1))
STAGES = ("frame_features", "windows", "tracking", "masks_rle")


def _toy_objects(rng: np.random.Generator, height: int, width: int, count: int
                 ) -> list[toy.ToyObject]:
    """Toy shapes bouncing inside the frame, alive all the time, sized to the frame."""
    scale = min(height, width) / 96.0
    objects = []
    for _ in range(count):
        radius = float(rng.uniform(11.0, 18.0)) * scale
        heading = float(rng.uniform(0, 2 * math.pi))
        speed = float(rng.uniform(0.5, 2.5)) * scale
        box = (radius, max(radius + 1, width - radius), radius, max(radius + 1, height - radius))
        class_index = int(rng.integers(len(toy.CLASSES)))
        objects.append(toy.ToyObject(
            class_index=class_index,
            start=(float(rng.uniform(box[0], box[1])), float(rng.uniform(box[2], box[3]))),
            velocity=(speed * math.cos(heading), speed * math.sin(heading)), radius=radius,
            growth=0.0, min_radius=radius, max_radius=radius,
            angle=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-0.1, 0.1)),
            first_frame=0, last_frame=2**31 - 1,
            colour=tuple(float(c) for c in toy.CLASSES[class_index].colour), bounce_box=box))
    return objects


def synthetic_frames(num_frames: int, height: int, width: int, seed: int = 0,
                     num_objects: int = 4) -> Iterator[np.ndarray]:
    """num_frames uint8 (height, width, 3) frames, one at a time (any length, O(1) memory):
    drifting sinusoid textures, `num_objects` moving toy shapes, Gaussian noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(70, 160) + rng.uniform(-20, 20, size=3)
    gratings = []
    for _ in range(3):
        frequency = float(rng.uniform(0.05, 0.35)) * 96.0 / min(height, width)  # as toy.py
        orientation = float(rng.uniform(0, math.pi))
        phase = (xs * math.cos(orientation) + ys * math.sin(orientation)) * frequency
        colour = (rng.uniform(8, 22) * (1.0 + rng.uniform(-0.4, 0.4, size=3))).astype(
            np.float32)
        gratings.append((np.sin(phase)[..., None] * colour, np.cos(phase)[..., None] * colour,
                         float(rng.uniform(-0.1, 0.1))))
    objects = _toy_objects(rng, height, width, num_objects)
    for t in range(num_frames):
        image = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
        for sin_layer, cos_layer, speed in gratings:
            image += sin_layer * math.cos(speed * t) + cos_layer * math.sin(speed * t)
        for obj in objects:  # later objects on top
            image[toy.shape_mask(obj, t, height, width)] = obj.colour
        image += rng.normal(0, 3, size=(height, width, 1)).astype(np.float32)
        yield np.clip(image + 0.5, 0, 255).astype(np.uint8)


def write_synthetic_video(path: str, num_frames: int, height: int, width: int,
                          fps: int = 30, seed: int = 0) -> None:
    """Streams `synthetic_frames` into an H.264 mp4 at `path` (PyAV; even height and width)."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in synthetic_frames(num_frames, height, width, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)


def random_model(config: Any, seed: int = 0) -> tuple[Any, Any]:
    """(IFC of config.model, randomly initialised variables on the default device)."""
    import jax
    import jax.numpy as jnp

    from ifc_jax.models.ifc import IFC
    from ifc_jax.validation import validate_model_config

    validate_model_config(config.model)
    model = IFC.from_config(config.model)
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 1, 64, 64, 3), jnp.uint8),
                                    jnp.zeros((1, 1, 64, 64), bool))
    return model, variables


def _time_setting(model: Any, variables: Any, config: Any, frames: np.ndarray,
                  window_frames: int, window_stride: int, repeats: int) -> dict[str, Any]:
    from ifc_jax.evaluation.results import result_options, video_results
    from ifc_jax.inference.predictor import VideoPredictor

    num_frames, height, width = frames.shape[:3]
    predictor = VideoPredictor(model, variables, window_frames=window_frames,
                               window_stride=window_stride,
                               match_threshold=float(config.inference.match_threshold))
    category_ids = list(range(1, int(config.model.num_classes) + 1))

    def predict_once():
        begin = time.perf_counter()
        prediction = predictor.predict(frames, num_frames, (height, width), (height, width))
        results = video_results(1, prediction.class_probs, prediction.segmentations,
                                category_ids, **result_options(config.inference))
        return time.perf_counter() - begin, prediction, results

    warmup_seconds, _, _ = predict_once()  # compiles every shape the timed runs use
    seconds, stages = 0.0, dict.fromkeys(STAGES, 0.0)
    for _ in range(repeats):
        elapsed, prediction, results = predict_once()
        seconds += elapsed
        for stage in STAGES:
            stages[stage] += prediction.seconds.get(stage, 0.0)
    shares = {stage: stages[stage] / seconds for stage in STAGES}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return {
        "window_frames": window_frames,
        "window_stride": window_stride,
        "windows": prediction.num_windows,
        "frames_per_s": repeats * num_frames / seconds,
        "seconds": seconds,
        "seconds_by_stage": stages,
        "share": shares,
        "warmup_seconds": warmup_seconds,
        "tracks": len(prediction.class_probs),
        "results": len(results),
    }


def benchmark_inference(config: Any, *, height: int, width: int, num_frames: int,
                        repeats: int = 1, seed: int = 0) -> dict[str, Any]:
    """Times both settings on one synthetic video; returns the figures as a dict."""
    import jax

    from ifc_jax.errors import UserError

    if height < 32 or width < 32 or num_frames < 1 or repeats < 1:
        raise UserError("--height and --width must be >= 32, --frames and --repeats >= 1")
    model, variables = random_model(config, seed)
    frames = np.stack(list(synthetic_frames(num_frames, height, width, seed)))
    settings = {name: _time_setting(model, variables, config, frames,
                                    min(window_frames, num_frames), window_stride, repeats)
                for name, window_frames, window_stride in SETTINGS}
    device = jax.devices()[0]
    memory = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {
        "what": "inference",
        "frames": num_frames,
        "height": height,
        "width": width,
        "repeats": repeats,
        "settings": settings,
        "model": {"backbone_depth": int(config.model.backbone.depth),
                  "hidden_dim": int(config.model.hidden_dim),
                  "num_queries": int(config.model.num_queries),
                  "num_classes": int(config.model.num_classes),
                  "communication": str(config.model.communication),
                  "dtype": str(config.model.dtype)},
        "device": {"platform": device.platform, "kind": device.device_kind,
                   "count": jax.device_count(), "cpu_count": os.cpu_count(),
                   "peak_bytes_in_use": (memory or {}).get("peak_bytes_in_use")},
    }


def run_benchmark(config: Any, args: Any) -> dict[str, Any]:
    """The `benchmark --what inference` entry point (arguments: see commands/benchmark.py)."""
    result = benchmark_inference(config, height=args.height or 128, width=args.width or 224,
                                 num_frames=args.frames, repeats=args.repeats)
    result["config"] = args.config
    return result


def format_result(result: dict[str, Any]) -> str:
    """A table of frames/s and stage shares per setting."""
    from ifc_jax.tools.output import format_table

    rows = []
    for name, s in result["settings"].items():
        rows.append([name, s["window_frames"], s["window_stride"], s["windows"],
                     f"{s['frames_per_s']:.1f}"]
                    + [f"{100 * s['share'][stage]:.1f}" for stage in (*STAGES, "other")])
    device = result["device"]
    return "\n".join([
        f"inference on {result['frames']} synthetic frames at {result['height']}x"
        f"{result['width']}, {result['config']}, random weights, {device['platform']} "
        f"({device['kind']})",
        format_table(["setting", "T", "S", "windows", "frames/s", "backbone %",
                      "enc/dec %", "tracking %", "rle %", "other %"], rows),
    ])
