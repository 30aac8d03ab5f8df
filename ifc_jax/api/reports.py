"""Counting, scoring, converting and measuring as plain functions: `summarize`,
`encoder_flops_table`, `score`, `convert_weights`, `run_benchmark`. Each returns data; the
commands print it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ifc_jax.config import COMMUNICATION_VARIANTS, ensure_config
from ifc_jax.io import UserError, check_write_target

VARIANT_LABELS = {
    "no_comm": "No Comm",
    "full_thw": "Full THW",
    "decompose_thw": "Decompose T-HW",
    "ifc": "IFC",
}
FLOPS_VARIANTS = ("no_comm", "full_thw", "decompose_thw", "ifc")  # the paper's table order
PAPER_SIZES = ((360, 640), (720, 1280))
PAPER_FRAMES = (5, 36)
PAPER_MEMORY = 8
PLOT_FRAMES = (1, 2, 5, 10, 15, 20, 25, 30, 36)


def summarize(config: Any) -> dict[str, Any]:
    """Parameter counts per top-level module and forward GFLOPs per frame of `config.model`
    at `config.summary`'s input size, traced abstractly (nothing is computed)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ifc_jax.flops import abstract_init, count_flops_by_module
    from ifc_jax.models.ifc import IFC

    config = ensure_config(config)
    model = IFC.from_config(config.model)
    size = config.summary
    frames = jax.ShapeDtypeStruct((1, size.num_frames, size.height, size.width, 3), jnp.uint8)
    padding = jax.ShapeDtypeStruct((1, size.num_frames, size.height, size.width), jnp.bool_)
    variables = abstract_init(model, frames, padding)
    parameters = {
        name: int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
        for name, tree in variables["params"].items()
    }
    flops = count_flops_by_module(model.apply, variables, frames, padding)
    gflops_per_frame = {name: sum(c.values()) / 1e9 / size.num_frames
                        for name, c in flops.items()}
    return {
        "communication": config.model.communication,
        "input": {"height": size.height, "width": size.width, "frames": size.num_frames},
        "parameters": parameters,
        "parameters_total": sum(parameters.values()),
        "parameters_without_backbone": sum(v for k, v in parameters.items() if k != "backbone"),
        "gflops_per_frame": gflops_per_frame,
        "gflops_per_frame_total": sum(gflops_per_frame.values()),
    }


def _check_variants_and_plot(variants: Sequence[str], plot: str | None) -> None:
    unknown = [variant for variant in variants if variant not in COMMUNICATION_VARIANTS]
    if unknown:
        raise UserError(f"--variants: unknown {unknown[0]!r}; expected "
                        f"{', '.join(COMMUNICATION_VARIANTS)}")
    if plot and not plot.lower().endswith(".png"):
        raise UserError(f"--plot {plot}: the plot is written as PNG; give a .png file name")
    if plot:
        check_write_target(plot, "--plot", folder=False)


def _positive(name: str, values: Sequence[int] | None, default: Sequence[int]) -> list[int]:
    values = list(default if values is None else values)
    bad = [value for value in values if value < 1]
    if bad:
        raise UserError(f"--{name}: values must be >= 1, got {bad[0]}")
    return values


def encoder_flops_table(*, heights: Sequence[int] | None = None,
                        widths: Sequence[int] | None = None,
                        frames: Sequence[int] | None = None,
                        memory: Sequence[int] | None = None,
                        variants: Sequence[str] = FLOPS_VARIANTS,
                        plot: str | None = None) -> dict[str, Any]:
    """Encoder GFLOPs of the communication variants, counted from our traced encoders
    (docs/flops.md). With no sizes: the paper's table (360x640 and 720x1280, T=5 and 36, M=8)
    with its numbers beside ours; otherwise every combination of the (paired) heights and
    widths, `frames` and `memory`. `plot`: also a PNG of GFLOPs against T at the first size.

    Returns {"rows": [...], "paper_table": bool, "plot": path or None}.
    """
    from ifc_jax.flops import PAPER_ENCODER_GFLOPS, encoder_flops

    _check_variants_and_plot(variants, plot)
    paper_table = all(value is None for value in (heights, widths, frames, memory))
    if paper_table:
        settings = [(h, w, t, PAPER_MEMORY) for (h, w) in PAPER_SIZES for t in PAPER_FRAMES]
    else:
        heights = _positive("height", heights, [PAPER_SIZES[0][0]])
        widths = _positive("width", widths, [PAPER_SIZES[0][1]])
        if len(heights) != len(widths):
            raise UserError("--height and --width take the same number of values (paired "
                            "sizes)")
        settings = [(h, w, t, m) for (h, w), t, m in itertools.product(
            zip(heights, widths, strict=True), _positive("frames", frames, [PAPER_FRAMES[0]]),
            _positive("memory", memory, [PAPER_MEMORY]))]
    rows = []
    for variant in variants:
        seen = set()  # the memory size only matters for IFC: count the others once
        for height, width, num_frames, slots in settings:
            if variant != "ifc":
                if (height, width, num_frames) in seen:
                    continue
                seen.add((height, width, num_frames))
            slots = slots if variant == "ifc" else 0
            counts = encoder_flops(variant, height, width, num_frames, slots)
            row = {"variant": variant, "height": height, "width": width, "frames": num_frames,
                   "memory": slots, "gflops": sum(counts.values()) / 1e9}
            paper = PAPER_ENCODER_GFLOPS[variant].get((height, width, num_frames))
            if paper is not None and (variant != "ifc" or slots == PAPER_MEMORY):
                row["paper_gflops"] = paper
            rows.append(row)
    if plot:
        first = settings[0]
        _plot_flops(plot, variants, first[0], first[1], (memory or [PAPER_MEMORY])[0])
    return {"rows": rows, "paper_table": paper_table, "plot": plot}


def _plot_flops(path: str, variants: Sequence[str], height: int, width: int,
                memory: int) -> None:
    """GFLOPs against T, one line per variant."""
    from ifc_jax.flops import encoder_flops
    from ifc_jax.io import new_figure, save_figure_png

    figure, axes = new_figure()
    for variant in variants:
        slots = memory if variant == "ifc" else 0
        gflops = [sum(encoder_flops(variant, height, width, t, slots).values()) / 1e9
                  for t in PLOT_FRAMES]
        label = VARIANT_LABELS[variant] + (f" (M={memory})" if variant == "ifc" else "")
        axes.plot(PLOT_FRAMES, gflops, marker="o", label=label)
    axes.set_xlabel("frames per clip T")
    axes.set_ylabel("encoder GFLOPs per clip")
    axes.set_title(f"Encoder cost at {height}x{width}")
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure_png(figure, path)


def score(gt: str, results: str) -> dict[str, Any]:
    """AP/AR of a results.json against YouTube-VIS / OVIS ground truth (docs/metric.md), or
    of COCO detections against a COCO file (pycocotools' COCOeval, segm).

    Returns {"metrics", "per_category", "videos", "categories", "predictions",
    "dropped_predictions", "videos_without_predictions", "occlusion"}: metric values are
    fractions, -1 undefined; "per_category" lists {"id", "name", "AP"} per GT category in id
    order (`per_category_ap`). A GT file without annotations (a test split) is a UserError.
    """
    from ifc_jax.data.coco import is_coco
    from ifc_jax.evaluation.ytvis_io import require_ground_truth
    from ifc_jax.evaluation.ytvis_metric import evaluate, load_results, parse_ground_truth
    from ifc_jax.io import read_json

    # Read once: the metric's parser keeps category ids only, the names come from here.
    content = require_ground_truth(read_json(gt, "ground-truth file"), gt)
    if is_coco(content):
        return _score_coco(content, gt, results)
    ground_truth = parse_ground_truth(content, gt)
    evaluation = evaluate(ground_truth, load_results(results, ground_truth))
    return {"metrics": evaluation.metrics,
            "per_category": per_category_ap(evaluation.per_category_ap,
                                            content["categories"]),
            "videos": len(ground_truth.videos),
            "categories": len(ground_truth.category_ids),
            "predictions": evaluation.num_predictions,
            "dropped_predictions": evaluation.dropped_predictions,
            "videos_without_predictions": evaluation.videos_without_predictions,
            "occlusion": ground_truth.has_occlusion, "annotation_format": "ytvis"}


def _score_coco(content: dict, gt: str, results: str) -> dict[str, Any]:
    """`score` of COCO detections against a COCO file: pycocotools' COCOeval (segm); the
    same keys, "videos" counting images."""
    from ifc_jax.evaluation.coco_metric import check_detections, score_coco
    from ifc_jax.io import read_json

    detections = check_detections(read_json(results, "results file"), results)
    known = {category["id"] for category in content.get("categories") or []}
    kept = [d for d in detections if d["category_id"] in known]
    metrics, ap_by_id = score_coco(content, kept, gt_source=gt)
    images = {image["id"] for image in content["images"]}
    return {"metrics": metrics,
            "per_category": per_category_ap(ap_by_id, content["categories"]),
            "videos": len(images), "categories": len(known), "predictions": len(detections),
            "dropped_predictions": len(detections) - len(kept),
            "videos_without_predictions": len(images - {d["image_id"] for d in kept}),
            "occlusion": False, "annotation_format": "coco"}


def per_category_ap(ap_by_id: dict[int, float], categories: Sequence[dict]
                    ) -> list[dict[str, Any]]:
    """[{"id", "name", "AP"}] in category-id order, from the metric's per-category APs
    (`Evaluation.per_category_ap`) and the GT's `categories` list (for the names; the id
    where a category has none). AP is -1 for a category without ground truth."""
    names = {category["id"]: str(category.get("name", category["id"]))
             for category in categories}
    return [{"id": category_id, "name": names.get(category_id, str(category_id)), "AP": ap}
            for category_id, ap in sorted(ap_by_id.items())]


def convert_weights(source: str, output: str, config: Any, *, overwrite: bool = False,
                    config_name: str = "") -> dict[str, Any]:
    """Converts a PyTorch checkpoint (IFC .pth, detectron2 / torchvision ResNet) for
    `config`'s model into the orbax checkpoint folder `output`. Returns the conversion
    report with "output" and "warnings" added."""
    from ifc_jax.convert import check_output, convert_checkpoint, write_checkpoint

    config = ensure_config(config)
    check_output(output, overwrite, source)
    check_write_target(output, "--to", folder=True)
    conversion = convert_checkpoint(source, config, config_name)
    written = write_checkpoint(conversion, output, overwrite)
    return conversion.report | {"output": written, "warnings": list(conversion.warnings)}


# --what -> the recipe it measures when no config is given: the paper's sizes for the data
# pipeline and the encoders, the tiny model for inference and training on a CPU.
BENCHMARK_RECIPES = {"data": "ifc_r50_ytvis19", "encoder": "ifc_r50_ytvis19",
                     "inference": "tiny", "train": "tiny",
                     "postprocess": "ifc_r50_ytvis19",  # (its classes only)
                     "overlay": "tiny"}  # (no model)
BENCHMARKS = tuple(BENCHMARK_RECIPES)


def run_benchmark(what: str, config: Any | None = None, *, batches: int = 20, warmup: int = 3,
                  batch_size: int | None = None, source: str = "toy", toy_root: str = "data/toy",
                  height: int | None = None, width: int | None = None, frames: int = 36,
                  clip_lengths: Sequence[int] = (1, 5, 10, 20, 36),
                  variants: Sequence[str] | None = None, plot: str | None = None,
                  repeats: int | None = None, kept_queries: int = 0,
                  dtypes: Sequence[str] = (), peak_size: int = 0,
                  threads: Sequence[int] = (1, 2), tracks: int = 10,
                  trials: int = 5, weights: str | None = None) -> dict[str, Any]:
    """One speed measurement (`benchmark --what`); returns its figures.

    data: clips/s of the train pipeline (`batches` timed after `warmup`, `batch_size`, on the
      toy data at `toy_root` or the config's `source`); encoder: ms per clip of `variants` at
      `height` x `width` (default 360x640) for each of `clip_lengths`, `repeats` each, with a
      `plot`; inference: frames/s of a synthetic `frames`-frame video at `height` x `width`
      (default 128x224) per compute dtype in `dtypes`, over `trials` rounds; train:
      clips/s of the jitted step (`batches` timed after `warmup`) and the bytes of its input
      batch. `peak_size`: the matmul that measures the peak. postprocess: host ms per output
      frame of `tracks` tracks at `height` x `width` (default 720x1280) per count in
      `threads`, the masks' run boundaries found where `config.inference.mask_rle` says.
      overlay: host ms per frame of predict's pictures (drawing, MP4, GIF, keyframes) of
      `tracks` tracks on `frames` frames at `height` x `width` (default 720x1280), the
      whole stage per count in `threads`.
    `weights` (inference only): time that workdir's or checkpoint's trained model instead of
    random weights. `config` None: the config recorded in the `weights` workdir, else
    BENCHMARK_RECIPES[what].
    """
    from ifc_jax.models.attention import attention_implementation

    if what not in BENCHMARKS:
        raise UserError(f"--what {what}: expected one of {', '.join(BENCHMARKS)}")
    if batches < 1 or warmup < 0 or peak_size < 0:
        raise UserError("--batches must be >= 1, --warmup and --peak-size >= 0")
    for flag, size in (("--height", height), ("--width", width)):
        if size is not None and size < 1:  # None is the benchmark's default size, 0 is not
            raise UserError(f"{flag}: must be >= 1 pixel (leave it out for the default), "
                            f"got {size}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1 (leave it out for "
                        f"config.train.batch_size), got {batch_size}")
    if weights is not None:
        if what != "inference":
            raise UserError(f"--weights: only --what inference times a trained model, not "
                            f"{what}")
        from ifc_jax import storage
        from ifc_jax.api.model import resolve_config

        if not storage.exists(weights):
            raise UserError(f"{weights}: no such workdir or checkpoint")
        config = resolve_config(config, weights)
    config = ensure_config(BENCHMARK_RECIPES[what] if config is None else config)
    group = int(config.train.loss_group_size)
    if what == "train" and batch_size is not None and group and batch_size % group:
        raise UserError(f"--batch-size: must be a multiple of config.train.loss_group_size "
                        f"({group}; the clips normalised together), got {batch_size}")
    repeats = repeats if repeats is not None else 3 if what in (
        "inference", "postprocess", "overlay") else 1
    with attention_implementation(config.model.attention):
        if what == "data":
            from ifc_jax.benchmarks.data import benchmark_train_pipeline

            return benchmark_train_pipeline(config, source=source, toy_root=toy_root,
                                            batch_size=batch_size,
                                            num_batches=batches, warmup_batches=warmup)
        if what == "encoder":
            return _encoder_benchmark(config, height, width, clip_lengths, variants, repeats,
                                      plot)
        if what == "postprocess":
            from ifc_jax.benchmarks.postprocess import benchmark_postprocess

            return benchmark_postprocess(height=height or 720, width=width or 1280,
                                         tracks=tracks, num_frames=frames,
                                         threads=tuple(threads), repeats=repeats,
                                         num_classes=int(config.model.num_classes),
                                         windows_per_call=int(
                                             config.inference.windows_per_call),
                                         mask_rle=config.inference.mask_rle)
        if what == "overlay":
            from ifc_jax.benchmarks.overlay import benchmark_overlay

            return benchmark_overlay(height=height or 720, width=width or 1280, tracks=tracks,
                                     num_frames=frames, repeats=repeats,
                                     threads=tuple(threads))
        if what == "inference":
            from ifc_jax.benchmarks.inference import benchmark_inference

            return benchmark_inference(config, height=height or 128, width=width or 224,
                                       num_frames=frames, repeats=repeats,
                                       dtypes=tuple(dtypes), peak_size=peak_size,
                                       kept_queries=kept_queries, trials=trials,
                                       weights=weights)
        from ifc_jax.benchmarks.train import benchmark_train

        return benchmark_train(config, steps=batches, warmup=warmup, batch_size=batch_size,
                               dtypes=tuple(dtypes), peak_size=peak_size)


def _encoder_benchmark(config: Any, height: int | None, width: int | None,
                       clip_lengths: Sequence[int], variants: Sequence[str] | None,
                       repeats: int, plot: str | None) -> dict[str, Any]:
    from ifc_jax.benchmarks.encoder import VARIANTS, benchmark_encoders, plot_encoder_benchmark

    variants = list(variants or VARIANTS)
    _check_variants_and_plot(variants, plot)
    if any(t < 1 for t in clip_lengths) or repeats < 1:
        raise UserError("--clip-lengths and --repeats must be >= 1")
    model = config.model
    result = benchmark_encoders(
        height=height or 360, width=width or 640, frames=tuple(clip_lengths),
        variants=variants, memory=model.num_memory_tokens, hidden_dim=model.hidden_dim,
        num_heads=model.num_heads, dim_feedforward=model.dim_feedforward,
        repeats=repeats, dtype=model.dtype)
    if plot:
        plot_encoder_benchmark(result, plot)
        result["plot"] = plot
    return result
