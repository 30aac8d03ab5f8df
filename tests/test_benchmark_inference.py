"""`benchmark --what inference`: one JSON object with frames/s (the paper's way and model-only),
stage shares and the roofline per setting and compute dtype."""

import json

import numpy as np

from ifc_jax import cli
from ifc_jax.benchmarks import inference as benchmark_inference


def test_inference_benchmark_json(capsys):
    code = cli.main(["benchmark", "--what", "inference", "--json", "--height", "64",
                     "--width", "96", "--frames", "8", "--dtypes", "float32", "bfloat16",
                     "--peak-size", "128"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)  # the one JSON object on stdout
    assert result["what"] == "inference" and result["config"] == "tiny"
    assert (result["frames"], result["height"], result["width"]) == (8, 64, 96)
    assert [run["dtype"] for run in result["runs"]] == ["float32", "bfloat16"]
    for run in result["runs"]:
        assert run["attention"] == "xla"  # CPU
        assert run["peak"]["flop_per_s"] > 0 and run["peak"]["size"] == 128
        near_online, offline = run["settings"]["near_online"], run["settings"]["offline"]
        assert (near_online["window_frames"], near_online["window_stride"]) == (5, 1)
        assert near_online["windows"] == 4  # starts 0, 1, 2 and the right-aligned 3
        assert (offline["window_frames"], offline["windows"]) == (8, 1)  # clip shorter than 36
        for setting in (near_online, offline):
            assert setting["frames_per_s"] == 8 / setting["seconds"] > 0
            shares = setting["share"]
            assert set(shares) == {"frame_features", "windows", "tracking", "masks_rle",
                                   "other"}
            assert all(0 <= share <= 1 for share in shares.values())
            assert abs(sum(shares.values()) - 1) < 1e-6 or shares["other"] == 0
            for stage, seconds in setting["seconds_by_stage"].items():
                assert abs(seconds / setting["seconds"] - shares[stage]) < 1e-9
            assert setting["warmup_seconds"] > 0
            model_only = setting["model_only"]
            assert model_only["frames_per_s"] == 8 / model_only["seconds"] > 0
            line = setting["roofline"]
            assert line["gflops_per_frame"] > 0 and line["gmacs_per_frame"] > 0
            for way in ("paper_way", "model_only"):
                assert line[way]["tflop_per_s"] > 0
                assert 0 < line[way]["fraction_of_peak"] <= 1
        # Near-online runs the clip forward for 4 windows of 5 frames, offline once for 8.
        assert (near_online["roofline"]["gflops_per_frame"]
                > offline["roofline"]["gflops_per_frame"])


def test_inference_benchmark_table_and_bad_dtype(capsys):
    code = cli.main(["benchmark", "--what", "inference", "--height", "32", "--width", "32",
                     "--frames", "2", "--peak-size", "64"])
    out = capsys.readouterr().out
    assert code == 0 and "near_online" in out and "% of peak" in out and "TFLOP/s" in out
    code = cli.main(["benchmark", "--what", "inference", "--dtypes", "float16"])
    err = capsys.readouterr().err
    assert code == 2 and [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: --dtypes: unknown 'float16'; expected float32 or bfloat16"]


def test_synthetic_frames_look_like_video():
    frames = np.stack(list(benchmark_inference.synthetic_frames(6, 48, 80, seed=2)))
    again = np.stack(list(benchmark_inference.synthetic_frames(6, 48, 80, seed=2)))
    np.testing.assert_array_equal(frames, again)  # deterministic in the seed
    assert frames.shape == (6, 48, 80, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # textured, not flat
    step = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean()
    assert 0.5 < step < 40  # consecutive frames differ, but like a video, not like noise
    assert np.abs(frames[0].astype(np.int16) - frames[-1]).mean() > step


def test_limit_kept_queries_keeps_that_many_in_the_first_window(tiny_config):
    from ifc_jax.inference.predictor import VideoPredictor
    from ifc_jax.inference.tracking import kept_query_mask

    model, variables = benchmark_inference.random_model(tiny_config)
    frames = np.stack(list(benchmark_inference.synthetic_frames(5, 64, 96, seed=1)))
    predictor = VideoPredictor(model, variables, window_frames=5, window_stride=1,
                               match_threshold=0.05)

    def kept(params):
        features = predictor.encode_frames(params, frames, np.zeros(frames.shape[:3], bool))
        probs, _ = predictor.run_window(params, features, np.ones(5, bool))
        return int(kept_query_mask(np.asarray(probs)).sum())

    assert kept(variables) > 3  # a random head keeps most of the 10 queries
    for target in (3, 1, 0):
        assert kept(benchmark_inference.limit_kept_queries(predictor, frames, target)) == target
