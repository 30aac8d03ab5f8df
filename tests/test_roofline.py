"""Roofline pieces: the measured matmul peak, hardware FLOPs from MAC counts, the predictor's
programs counted consistently with the whole model, and the counter's attention kernel."""

from collections import Counter

import jax
import jax.numpy as jnp
import pytest

from ifc_jax.benchmarks import roofline
from ifc_jax.flops import abstract_init, count_flops, encoder_flops
from ifc_jax.inference.predictor import VideoPredictor
from ifc_jax.io import UserError
from ifc_jax.models.ifc import IFC


def test_measure_matmul_peak_fields():
    peak = roofline.measure_matmul_peak("float32", size=64, repeats=3)
    assert (peak["dtype"], peak["size"], peak["repeats"]) == ("float32", 64, 3)
    assert peak["seconds"] > 0
    assert peak["flop_per_s"] == pytest.approx(2 * 64**3 / peak["seconds"])
    assert peak["tflop_per_s"] == pytest.approx(peak["flop_per_s"] / 1e12)
    assert roofline.default_peak_size("gpu") == 8192 and roofline.default_peak_size("cpu") == 1024


def test_hardware_flops_are_two_per_multiply_add_of_matrix_work():
    counts = Counter(matmul=10, conv=5, layer_norm=1000, group_norm=7)
    assert roofline.matrix_flops(counts) == 30
    peak = {"flop_per_s": 100.0}
    assert roofline.achieved(50.0, 1.0, peak) == {"tflop_per_s": 50e-12,
                                                  "fraction_of_peak": 0.5}


def test_predictor_programs_add_up_to_the_model_forward(tiny_config):
    """One chunk (frame features of T frames) + one window = the model on one T-frame clip."""
    model = IFC.from_config(tiny_config.model)
    frames = jax.ShapeDtypeStruct((1, 3, 64, 96, 3), jnp.uint8)
    padding = jax.ShapeDtypeStruct((1, 3, 64, 96), jnp.bool_)
    variables = abstract_init(model, frames, padding)
    predictor = VideoPredictor(model, variables, window_frames=3, window_stride=1,
                               match_threshold=0.05, windows_per_call=1)  # chunks of T = 3
    counts = roofline.predictor_counts(predictor, 64, 96)
    whole = count_flops(model.apply, variables, frames, padding)
    assert counts["chunk"] + counts["window"] == whole
    video = roofline.video_flops(counts, num_frames=7, chunk_frames=3, num_windows=5)
    chunk, window = (roofline.matrix_flops(counts[k]) for k in ("chunk", "window"))
    assert video["flops"] == 3 * chunk + 5 * window  # ceil(7 / 3) chunks
    assert video["gflops_per_frame"] == pytest.approx(video["flops"] / 7 / 1e9)
    macs = 3 * sum(counts["chunk"].values()) + 5 * sum(counts["window"].values())
    assert video["gmacs_per_frame"] == pytest.approx(macs / 7 / 1e9)


def test_counter_traces_xla_attention_whatever_the_setting(monkeypatch):
    """cuDNN's kernel is a custom call the walker cannot see into: counts always trace XLA's
    (on CPU a cuDNN trace would fail outright)."""
    expected = sum(encoder_flops("ifc", 64, 96, 3, 4, 32, 2, 64).values())
    monkeypatch.setenv("IFC_JAX_ATTENTION", "cudnn")
    assert sum(encoder_flops("ifc", 64, 96, 3, 4, 32, 2, 64).values()) == expected


def test_check_dtypes():
    assert roofline.check_dtypes(("bfloat16", "float32", "bfloat16")) == ("bfloat16", "float32")
    with pytest.raises(UserError, match="float16"):
        roofline.check_dtypes(("float16",))
