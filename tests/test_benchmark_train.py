"""`benchmark --what train`: the train-step harness on CPU at tiny sizes, its synthetic batch and
its flag errors."""

import json
import math
import os
import subprocess
import sys

import numpy as np

from ifc_jax import cli
from ifc_jax.benchmarks.train import format_result, synthetic_batch
from ifc_jax.train.step import MODEL_INPUTS
from tests.test_gpu_run import load_gpu_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One encoder block and one decoder layer: the harness is under test, not the model; this
# keeps the compile short. 8 clips: the tests run on 8 virtual CPU devices.
SMALL = ["--batch-size", "8", "--config.model.enc_layers=1", "--config.model.dec_layers=1"]


def test_train_benchmark_json(capsys):
    code = cli.main(["benchmark", "--what", "train", "--json", "--batches", "2", "--warmup",
                     "1", "--peak-size", "128", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)  # exactly one JSON object on stdout
    assert result["what"] == "train" and result["config"] == "tiny"
    assert (result["batch_size"], result["num_frames"], result["height"], result["width"],
            result["max_instances"], result["matcher"]) == (8, 3, 64, 96, 4, "host")
    assert result["device"]["count"] == 8
    # Input bytes per step: the five fields at the global batch's shapes (8 clips, 3 frames,
    # 64 x 96, 4 slots), the targets at stride 4 and one byte per pixel.
    expected = {"frames": 8 * 3 * 64 * 96 * 3, "padding_mask": 8 * 3 * 64 * 96,
                "labels": 8 * 4 * 4, "instance_valid": 8 * 4,
                "target_counts": 8 * 4 * 3 * 16 * 24}
    assert result["input_bytes"] == expected
    assert result["input_bytes_per_step"] == sum(expected.values()) == 626848
    table = format_result(result)
    assert "input MB/step" in table and "0.627" in table
    assert "target_counts 36,864; total 626,848" in table
    (run,) = result["runs"]
    assert run["dtype"] == "float32" and run["attention"] == "xla"
    assert (run["warmup_steps"], run["steps"], len(run["step_seconds"])) == (1, 2, 2)
    assert run["compile_seconds"] > 0 and all(s > 0 for s in run["step_seconds"])
    assert run["median_step_seconds"] > 0 and run["mean_step_seconds"] > 0
    assert math.isclose(run["clips_per_s"], 8 / run["median_step_seconds"])
    assert math.isclose(run["frames_per_s"], 3 * run["clips_per_s"])
    assert math.isfinite(run["loss"]) and run["loss"] > 0
    line = run["roofline"]
    assert math.isclose(line["gflops_per_step"], 8 * line["gflops_per_clip"])
    # Forward + backward (+ matching costs): about three forward passes.
    assert 2 < line["gflops_per_clip"] / line["forward_gflops_per_clip"] < 4
    assert line["tflop_per_s"] > 0 and 0 < line["fraction_of_peak"] <= 1
    assert run["peak"]["flop_per_s"] > 0 and run["peak"]["dtype"] == "float32"
    (summary,) = load_gpu_run().summarize("train", captured.out)  # tools/gpu_run.py
    assert summary.startswith("train: float32: ") and "(8 clips x 3 frames at 64x96)" in summary


def test_synthetic_batch_has_its_own_targets():
    batch = synthetic_batch(3, 2, 48, 64, max_instances=4, num_classes=4, seed=1)
    assert set(batch) == set(MODEL_INPUTS)  # what the pipeline ships, nothing more
    assert batch["frames"].shape == (3, 2, 48, 64, 3) and batch["frames"].dtype == np.uint8
    counts = batch["target_counts"]
    assert counts.shape == (3, 4, 2, 12, 16) and counts.dtype == np.uint8
    assert batch["labels"].dtype == np.int32
    valid = batch["instance_valid"]
    assert valid.any(axis=1).all() and not valid.all(axis=1).any()  # some slots invalid
    assert not counts[~valid].any() and (batch["labels"][~valid] == 0).all()
    assert (batch["labels"] < 4).all()
    assert batch["padding_mask"][1].any() and not batch["padding_mask"][0].any()
    # No target where the 4 pixels a target pixel counts are padding.
    sampled_padding = batch["padding_mask"][1][:, 1::4, 1::4]
    assert sampled_padding.any() and not counts[1][:, sampled_padding].any()
    # Each valid object is visible; visible masks never overlap, so the counts of a pixel's
    # objects sum to at most 4.
    for clip, slot in zip(*np.nonzero(valid), strict=True):
        assert counts[clip, slot].sum() > 0
    assert counts.sum(axis=1).max() <= 4 and counts.max() == 4
    assert batch["frames"].std() > 10


def test_bad_flags_give_one_error_line():
    for flags in (["--dtypes", "float16"], ["--config.train.matcher=magic"],
                  ["--attention", "flash"], ["--batches", "0"]):
        proc = subprocess.run([sys.executable, "main.py", "benchmark", "--what", "train",
                               *flags], cwd=REPO, capture_output=True, text=True, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
        assert proc.stdout == ""
