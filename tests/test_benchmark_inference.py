"""`benchmark --what inference`: one JSON object with frames/s and stage shares per setting."""

import json

import numpy as np

from ifc_jax import cli
from ifc_jax.tools import benchmark_inference


def test_inference_benchmark_json(capsys):
    code = cli.main(["benchmark", "--what", "inference", "--json", "--height", "64",
                     "--width", "96", "--frames", "8"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)  # the one JSON object on stdout
    assert result["what"] == "inference" and result["config"] == "configs/tiny.py"
    assert (result["frames"], result["height"], result["width"]) == (8, 64, 96)
    near_online, offline = result["settings"]["near_online"], result["settings"]["offline"]
    assert (near_online["window_frames"], near_online["window_stride"]) == (5, 1)
    assert near_online["windows"] == 4  # starts 0, 1, 2 and the right-aligned 3
    assert (offline["window_frames"], offline["windows"]) == (8, 1)  # clip shorter than 36
    for setting in (near_online, offline):
        assert setting["frames_per_s"] == 8 / setting["seconds"] > 0
        shares = setting["share"]
        assert set(shares) == {"frame_features", "windows", "tracking", "masks_rle", "other"}
        assert all(0 <= share <= 1 for share in shares.values())
        assert abs(sum(shares.values()) - 1) < 1e-6 or shares["other"] == 0
        for stage, seconds in setting["seconds_by_stage"].items():
            assert abs(seconds / setting["seconds"] - shares[stage]) < 1e-9
        assert setting["warmup_seconds"] > 0


def test_synthetic_frames_look_like_video():
    frames = np.stack(list(benchmark_inference.synthetic_frames(6, 48, 80, seed=2)))
    again = np.stack(list(benchmark_inference.synthetic_frames(6, 48, 80, seed=2)))
    np.testing.assert_array_equal(frames, again)  # deterministic in the seed
    assert frames.shape == (6, 48, 80, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # textured, not flat
    step = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean()
    assert 0.5 < step < 40  # consecutive frames differ, but like a video, not like noise
    assert np.abs(frames[0].astype(np.int16) - frames[-1]).mean() > step
