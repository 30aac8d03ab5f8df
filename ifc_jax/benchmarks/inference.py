"""Inference speed (frames/s) of whole-video prediction, near-online and offline.

The convention: docs/inference.md#fps.

Measured the paper's way: wall time from the video's frames (decoded, resized, in memory) to
its final per-video results (backbone once per frame, every window's encoder/decoder/heads,
tracking, upsampling + RLE of every mask, the results entries) divided by the number of
frames. Two settings: near-online T=5, S=1 and offline T=36, S=36 (windows side by side:
a longer video counts as consecutive 36-frame clips, one window each, as the paper's
YouTube-VIS 2019 val videos of <= 36 frames; T = the clip length for shorter clips).
Compilation is excluded: each setting first predicts the same video once untimed. The stream
and the model-only run below are timed `--trials` times (default 5), alternating: frames/s are
the fastest of each, and the ratio end-to-end / model-only is the median of the rounds' own
ratios, so that the load of a shared machine, which drifts, does not decide it. The share
of the time in each stage comes from `VideoPrediction.seconds`: frame_features (backbone,
input projection, position), windows (encoder, decoder, heads, the device -> host copy of a
window's outputs), tracking, masks_rle (upsampling to the output size, thresholding, RLE);
"other" is the rest. Process CPU time (every thread's, XLA's own included) is taken around
each stream and each model-only run: `host_cpu_ms_per_frame`, the median over the rounds of
the difference per frame, is the CPU work the host side adds. On a CPU backend the model
itself keeps most of the cores busy (`cores_busy`: CPU over wall time of each, medians of
the rounds), so little of that work can hide behind it. On a GPU it is what the host threads
must keep up with, counted from above: a runtime that spins while it waits for the device
(CUDA's default with a core to spare) counts its longer waits in a longer stream as well.

Beside it, model-only frames/s: the same jitted device programs the predictor runs (frame
features once per frame in chunks of T, every window's clip forward on features gathered on
the device), on the video already on the device, blocked once on all outputs at the end: no
tracking, no RLE, no per-window copy to the host. Each setting also gets its roofline
(`benchmarks/roofline.py`): counted FLOPs per frame, achieved TFLOP/s and the fraction of the
measured matrix-unit peak at the compute dtype. `--dtypes float32 bfloat16` runs both compute
precisions in one call (default: config.model.dtype); `--attention` picks the attention kernel.

The model has random weights (speed does not depend on them, except that tracking and RLE
cost grow with the instances kept: a random class head keeps about K/(K+1) of the queries of
every window, far more than a trained model does; `--kept-queries N` raises its no-object
bias so that about N of the first window's are kept, calibrated for each setting's own
window length; the JSON's `first_window_kept` says how many), or with `--weights` a trained
model's (a workdir or checkpoint, its config from the workdir's config.json unless --config
is given): a trained model keeps few queries and its masks are object-like, so the host's
share is what evaluating that model costs, not a random model's noisy masks'. The
video is synthetic but image-like: a drifting textured background with moving, spinning
toy-dataset shapes and sensor noise. Frames are given to the model at --height x --width and
masks are produced at that size (no test-time resize).

  python main.py benchmark --what inference --json                    # tiny model, CPU
  python main.py benchmark --what inference --weights workdirs/demo --json   # the demo's
  python main.py benchmark --what inference --config configs/ifc_r50_ytvis19.py \\
      --height 360 --width 640 --frames 180 --kept-queries 10 --dtypes bfloat16 float32 --json
"""

from __future__ import annotations

import copy
import time
from typing import Any, NamedTuple

import numpy as np

from ifc_jax.benchmarks.synthetic_video import (  # noqa: F401  (re-exported: tests and docs use them)
    synthetic_frames,
    synthetic_video,
    write_synthetic_video,
)

# (name, window_frames T, window_stride S; 0 = S equal to T). Offline windows lie side by
# side: a long video is timed as consecutive 36-frame clips, each one window, as every
# YouTube-VIS 2019 val video (<= 36 frames) is in the paper's offline figure.
SETTINGS = (("near_online", 5, 1), ("offline", 36, 0))
STAGES = ("frame_features", "windows", "tracking", "masks_rle")


def random_model(config: Any, seed: int = 0) -> tuple[Any, Any]:
    """(IFC of config.model, randomly initialised variables on the default device)."""
    import jax
    import jax.numpy as jnp

    from ifc_jax.models.ifc import IFC

    model = IFC.from_config(config.model)
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 1, 64, 64, 3), jnp.uint8),
                                    jnp.zeros((1, 1, 64, 64), bool))
    return model, variables


def with_dtype(config: Any, dtype: str) -> Any:
    """A copy of `config` whose model computes in `dtype` ("float32" | "bfloat16")."""
    config = copy.deepcopy(config)
    config.model.dtype = dtype
    return config


def _model_only(predictor: Any, frames: np.ndarray, repeats: int) -> dict[str, float]:
    """Frames/s of the predictor's device programs alone on a video in host memory, blocked
    once at the end, and the process CPU seconds of those runs (every thread: on a CPU
    backend XLA's own); and, timed apart, the seconds of the frame features and of the window
    calls (on features already computed)."""
    import jax

    num_frames, height, width = frames.shape[:3]

    def timed(run: Any) -> float:
        begin = time.perf_counter()
        jax.block_until_ready(run())
        return time.perf_counter() - begin

    def whole() -> Any:
        features = predictor.encode_video(frames)
        return features, predictor.run_video_windows(features, num_frames, (height, width))

    warmup_seconds = timed(whole)
    cpu_begin = time.process_time()
    seconds = sum(timed(whole) for _ in range(repeats))
    cpu_seconds = time.process_time() - cpu_begin
    features_seconds = sum(timed(lambda: predictor.encode_video(frames))
                           for _ in range(repeats))
    features = jax.block_until_ready(predictor.encode_video(frames))
    windows_seconds = sum(
        timed(lambda: predictor.run_video_windows(features, num_frames, (height, width)))
        for _ in range(repeats))
    return {"frames_per_s": repeats * num_frames / seconds, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "warmup_seconds": warmup_seconds,
            "frame_features_seconds": features_seconds, "windows_seconds": windows_seconds}


def first_window_margins(predictor: Any, frames: np.ndarray) -> np.ndarray:
    """(N,) per query of the first window of `frames` (T, H, W, 3) under
    `predictor.variables`: its best real class's log-probability minus the no-object one's,
    in descending order. A query is kept where its margin is >= 0."""
    from ifc_jax.inference.predictor import pad_chunk

    window = predictor.window_frames
    count = min(window, len(frames))
    variables = predictor.packed_variables  # the timed runs' form: one compiled program
    features = predictor.encode_frames(variables, *pad_chunk(frames[:count], window))
    probs, _ = predictor.run_window(variables, features, np.arange(window) < count)
    log_probs = np.log(np.maximum(np.asarray(probs, np.float64), 1e-30))
    return np.sort(log_probs[:, :-1].max(axis=1) - log_probs[:, -1])[::-1]


def limit_kept_queries(predictor: Any, frames: np.ndarray, kept: int) -> Any:
    """`predictor.variables` with the no-object logit's bias raised so that `kept` queries of
    the video's first window have a real class as arg-max (the kept instances of
    docs/inference.md#kept-instances).

    A random class head keeps about K/(K+1) of the N queries of every window, far more than a
    trained model (a handful), which inflates the tracking and RLE work; later windows of the
    slowly changing synthetic video keep about as many as the first.
    """
    margins = first_window_margins(predictor, frames)
    if kept >= len(margins) or margins[kept] < 0 <= margins[max(kept - 1, 0)]:
        return predictor.variables  # already keeps about that many
    shift = margins[0] + 1.0 if kept == 0 else (margins[kept - 1] + margins[kept]) / 2
    import jax

    head = predictor.variables["params"]["class_embed"]
    last = max(head, key=lambda name: int(name.split("_")[-1]))  # layers_<i>: the logits

    def shifted(path: tuple, leaf: Any) -> Any:
        is_logit_bias = path[0].key == last and path[-1].key == "bias"
        return leaf.at[-1].add(shift) if is_logit_bias else leaf

    params = {**predictor.variables["params"],
              "class_embed": jax.tree_util.tree_map_with_path(shifted, dict(head))}
    return {**predictor.variables, "params": params}


class _Stream(NamedTuple):
    """One timed stream of videos: its wall and process CPU seconds, every video's prediction
    and the last video's results entries."""

    seconds: float
    cpu_seconds: float
    predictions: list[Any]
    results: list[dict]


def _time_setting(predictor: Any, config: Any, frames: np.ndarray, repeats: int,
                  trials: int, peak: dict[str, Any]) -> dict[str, Any]:
    from ifc_jax.benchmarks import roofline
    from ifc_jax.evaluation.results import result_options, video_results
    from ifc_jax.inference.predictor import STAGES as HOST_STAGES

    num_frames, height, width = frames.shape[:3]
    window_frames, window_stride = predictor.window_frames, predictor.window_stride
    category_ids = list(range(1, int(config.model.num_classes) + 1))
    options = result_options(config.inference)

    def results_of(handle: Any) -> tuple[Any, list[dict]]:
        prediction = handle.result()
        return prediction, video_results(1, prediction.class_probs, prediction.segmentations,
                                         category_ids, **options)

    def predict_stream(count: int) -> _Stream:
        """`count` videos as evaluate runs them: a video's last masks encode on the host
        threads while the next one starts."""
        cpu_begin, begin = time.process_time(), time.perf_counter()
        predictions, pending = [], None
        for _ in range(count):
            handle = predictor.submit(frames, num_frames, (height, width), (height, width))
            if pending is not None:
                predictions.append(results_of(pending)[0])
            pending = handle
        prediction, results = results_of(pending)
        return _Stream(time.perf_counter() - begin, time.process_time() - cpu_begin,
                       [*predictions, prediction], results)

    # Untimed: compiles every shape the timed runs use and starts the host threads; a whole
    # stream, as the first timed round otherwise still pays for first uses.
    warmup_seconds = predict_stream(repeats).seconds
    # Rounds alternate so that both figures of a round see the same machine: the ratio is the
    # median of the rounds' ratios (a shared machine's load drifts over seconds); frames/s are
    # the fastest of each (a busy machine only ever slows a run down).
    streams, model_runs = [], []
    for _ in range(trials):
        streams.append(predict_stream(repeats))
        model_runs.append(_model_only(predictor, frames, repeats))
    trial_ratios = [run["seconds"] / stream.seconds
                    for stream, run in zip(streams, model_runs, strict=True)]
    per_frame = 1000.0 / (repeats * num_frames)
    # What the host adds to the device programs' CPU time (on a CPU backend both share the
    # cores, so overlapping hides little of it; on a GPU the host side's own time, plus any
    # spinning wait of the runtime over the stream's longer wall time).
    trial_host_cpu = [(stream.cpu_seconds - run["cpu_seconds"]) * per_frame
                      for stream, run in zip(streams, model_runs, strict=True)]
    cores_busy = {"end_to_end": float(np.median([stream.cpu_seconds / stream.seconds
                                                 for stream in streams])),
                  "model_only": float(np.median([run["cpu_seconds"] / run["seconds"]
                                                 for run in model_runs]))}
    seconds, _, predictions, results = min(streams, key=lambda stream: stream.seconds)
    model_only = min(model_runs, key=lambda run: run["seconds"])
    prediction = predictions[-1]
    host = {stage: sum(p.seconds.get(stage, 0.0) for p in predictions)
            for stage in HOST_STAGES}
    stages = {"frame_features": model_only["frame_features_seconds"] * per_frame,
              "windows": model_only["windows_seconds"] * per_frame,
              "tracking": host["tracking"] * per_frame,
              "masks_rle": host["masks_rle"] * per_frame}
    work = roofline.video_flops(roofline.predictor_counts(predictor, height, width),
                                num_frames, predictor.chunk_frames, prediction.num_windows)
    per_video = work.pop("flops")
    frames_per_s = repeats * num_frames / seconds
    return {
        "window_frames": window_frames,
        "window_stride": window_stride,
        "windows": prediction.num_windows,
        "windows_per_call": predictor.windows_per_call,
        "host_threads": predictor.host_threads,
        "mask_rle": predictor.mask_rle,
        "frames_per_s": frames_per_s,
        "seconds": seconds,
        "model_only": model_only,
        "end_to_end_over_model_only": float(np.median(trial_ratios)),
        "trial_ratios": trial_ratios,
        "stage_ms_per_frame": stages,
        "host_cpu_ms_per_frame": float(np.median(trial_host_cpu)),
        "trial_host_cpu_ms_per_frame": trial_host_cpu,
        "cores_busy": cores_busy,
        "host_seconds": host,
        "warmup_seconds": warmup_seconds,
        "roofline": {**work,
                     "paper_way": roofline.achieved(per_video * repeats, seconds, peak),
                     "model_only": roofline.achieved(per_video * repeats,
                                                     model_only["seconds"], peak)},
        "tracks": len(prediction.class_probs),
        "results": len(results),
    }


MAX_SIDE = 4096  # --height/--width bound: 36 frames at 4096x4096 are 1.8 GB of uint8 pixels


def benchmark_inference(config: Any, *, height: int, width: int, num_frames: int,
                        repeats: int = 1, seed: int = 0, dtypes: tuple[str, ...] = (),
                        peak_size: int = 0, kept_queries: int = 0, trials: int = 5,
                        weights: str | None = None) -> dict[str, Any]:
    """Times both settings on one synthetic video for each compute dtype; returns a dict.

    trials: rounds of the end-to-end stream and the model-only run, alternating; the fastest
    of each is reported, and the median of the rounds' ratios.

    kept_queries: > 0 calibrates the class head to keep about that many queries per window
    (`limit_kept_queries`); 0 leaves it as initialised (or trained).
    weights: a trained model's workdir or checkpoint (its variables must fit `config.model`);
    None: random weights.
    """
    from ifc_jax import storage
    from ifc_jax.benchmarks import roofline
    from ifc_jax.inference.loading import load_trained_model
    from ifc_jax.inference.predictor import VideoPredictor
    from ifc_jax.io import UserError
    from ifc_jax.models.attention import select_implementation
    from ifc_jax.models.ifc import IFC

    if not (32 <= height <= MAX_SIDE and 32 <= width <= MAX_SIDE):
        raise UserError(f"--height/--width: must be in 32..{MAX_SIDE} pixels (the synthetic "
                        f"video is held in host memory), got {height}x{width}")
    if num_frames < 1 or repeats < 1 or trials < 1 or kept_queries < 0:
        raise UserError("--frames, --repeats and --trials must be >= 1, --kept-queries >= 0")
    dtypes = roofline.check_dtypes(dtypes or (str(config.model.dtype),))
    frames = np.stack(list(synthetic_frames(num_frames, height, width, seed)))
    # A checkpoint is read once: its variables serve every compute dtype.
    trained = load_trained_model(config, weights)[1] if weights else None
    runs = []
    for dtype in dtypes:
        run_config = with_dtype(config, dtype)
        if trained is None:
            model, variables = random_model(run_config, seed)
        else:
            model, variables = IFC.from_config(run_config.model), trained
        # The config's inference settings but each setting's windows, and the frames given
        # to the model at --height x --width as they are (no padding to a multiple).
        predictors = {name: VideoPredictor.from_config(
            model, variables, config.inference, window_frames=min(window_frames, num_frames),
            window_stride=window_stride or min(window_frames, num_frames), pad_size_multiple=0)
            for name, window_frames, window_stride in SETTINGS}
        kept = {}
        if kept_queries:
            # Each setting on its own: a head calibrated on 5-frame windows kept no query of
            # the 36-frame windows of the R-50 model at 360x640 (seen on a GPU).
            for name, predictor in predictors.items():
                predictor.variables = limit_kept_queries(predictor, frames, kept_queries)
                margins = first_window_margins(predictor, frames)
                kept[name] = {"first_window_kept": int((margins >= 0).sum())}
        peak = roofline.measure_matmul_peak(dtype, peak_size)
        settings = {name: {**_time_setting(predictor, run_config, frames, repeats, trials,
                                           peak), **kept.get(name, {})}
                    for name, predictor in predictors.items()}
        head_dim = int(config.model.hidden_dim) // int(config.model.num_heads)
        runs.append({"dtype": dtype, "attention": select_implementation(model.dtype, head_dim),
                     "peak": peak, "settings": settings})
    return {
        "what": "inference",
        "frames": num_frames,
        "height": height,
        "width": width,
        "repeats": repeats,
        "trials": trials,
        "kept_queries": kept_queries,
        "weights": storage.absolute(weights) if weights else None,
        "runs": runs,
        "model": roofline.model_info(config.model),
        "device": roofline.device_info(),
    }


def format_result(result: dict[str, Any]) -> str:
    """Per dtype: the measured peak, then frames/s, stage times and roofline per setting."""
    from ifc_jax.benchmarks.roofline import format_peak
    from ifc_jax.io import format_table

    device = result["device"]
    lines = [f"inference on {result['frames']} synthetic frames at {result['height']}x"
             f"{result['width']}, {result['config']}, "
             f"{'weights ' + result['weights'] if result['weights'] else 'random weights'}, "
             f"{device['platform']} "
             f"({device['kind']})"]
    for run in result["runs"]:
        rows = []
        for name, s in run["settings"].items():
            line = s["roofline"]
            rows.append([name, s["window_frames"], s["window_stride"], s["windows"],
                         f"{s['frames_per_s']:.1f}", f"{s['model_only']['frames_per_s']:.1f}",
                         f"{s['end_to_end_over_model_only']:.2f}"]
                        + [f"{s['stage_ms_per_frame'][stage]:.3f}" for stage in STAGES]
                        + [f"{s['host_cpu_ms_per_frame']:.3f}",
                           f"{s['cores_busy']['end_to_end']:.2f} / "
                           f"{s['cores_busy']['model_only']:.2f}"]
                        + [f"{line['gflops_per_frame']:.3g}",
                           f"{line['model_only']['tflop_per_s']:.2f}",
                           f"{100 * line['model_only']['fraction_of_peak']:.1f}"])
        lines += [f"{run['dtype']} compute, {run['attention']} attention; "
                  + format_peak(run["peak"]),
                  format_table(["setting", "T", "S", "windows", "frames/s", "model-only",
                                "ratio", "backbone ms", "enc/dec ms", "tracking ms", "rle ms",
                                "host CPU ms", "cores busy",
                                "GFLOP/frame", "TFLOP/s", "% of peak"], rows)]
    lines.append("frames/s: end to end, the paper's way (to final results, tracking and RLE "
                 "included); model-only: the device programs alone; ratio: the two divided; "
                 "ms: per frame, each stage timed on its own (backbone, enc/dec: device "
                 "programs; tracking, rle: host, rle summed over its threads); host CPU: "
                 "process CPU time per frame end to end minus model-only's (median of the "
                 "rounds); cores busy: process CPU time over wall time, end to end / "
                 "model-only (medians of the rounds); TFLOP/s and % of peak: model-only")
    return "\n".join(lines)
