"""`benchmark --what inference`: one JSON object with frames/s (the paper's way and model-only),
stage shares and the roofline per setting and compute dtype."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax import cli
from ifc_jax.benchmarks import inference as benchmark_inference
from ifc_jax.checkpoints import Checkpoints, write_config_json
from tests.test_gpu_run import load_gpu_run

# The tiny model with fewer transformer layers: what is timed does not matter here, only
# what is reported; less to compile.
FEWER_LAYERS = ["--config.model.enc_layers=1", "--config.model.dec_layers=2"]


def test_inference_benchmark_json(capsys):
    code = cli.main(["benchmark", "--what", "inference", "--json", "--height", "64",
                     "--width", "96", "--frames", "8", "--dtypes", "float32", "bfloat16",
                     "--peak-size", "128", "--trials", "2", *FEWER_LAYERS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)  # the one JSON object on stdout
    assert result["what"] == "inference" and result["config"] == "tiny"
    assert (result["frames"], result["height"], result["width"]) == (8, 64, 96)
    assert result["repeats"] == 3 and result["trials"] == 2
    assert [run["dtype"] for run in result["runs"]] == ["float32", "bfloat16"]
    for run in result["runs"]:
        assert run["attention"] == "xla"  # CPU
        assert run["peak"]["flop_per_s"] > 0 and run["peak"]["size"] == 128
        near_online, offline = run["settings"]["near_online"], run["settings"]["offline"]
        assert (near_online["window_frames"], near_online["window_stride"]) == (5, 1)
        assert near_online["windows"] == 4  # starts 0, 1, 2 and the right-aligned 3
        assert (offline["window_frames"], offline["windows"]) == (8, 1)  # clip shorter than 36
        for setting in (near_online, offline):
            # A stream of 3 videos by default (a video's last masks encode during the next).
            assert setting["frames_per_s"] == pytest.approx(3 * 8 / setting["seconds"])
            stages = setting["stage_ms_per_frame"]
            assert set(stages) == {"frame_features", "windows", "tracking", "masks_rle"}
            assert all(ms > 0 for ms in stages.values())
            # The device stages are timed apart, on the programs the model-only figure runs.
            model_only = setting["model_only"]
            assert stages["frame_features"] == pytest.approx(
                1000 * model_only["frame_features_seconds"] / (3 * 8))
            # The ratio pairs each round's two runs: the median of 2 rounds is their mean.
            assert len(setting["trial_ratios"]) == 2
            assert setting["end_to_end_over_model_only"] == pytest.approx(
                np.mean(setting["trial_ratios"]))
            # Process CPU time: each round's host share is its stream's minus its
            # model-only run's, the figure their median.
            assert model_only["cpu_seconds"] > 0
            assert len(setting["trial_host_cpu_ms_per_frame"]) == 2
            assert setting["host_cpu_ms_per_frame"] == pytest.approx(
                np.mean(setting["trial_host_cpu_ms_per_frame"]))
            # CPU over wall time: at most every core busy all the time.
            assert all(0 < busy <= 1.05 * os.cpu_count()
                       for busy in setting["cores_busy"].values())
            assert set(setting["host_seconds"]) == {
                "input", "dispatch_chunks", "dispatch_windows", "copy_start", "device_wait",
                "tracking", "masks_rle", "rle_wait"}
            assert setting["warmup_seconds"] > 0
            assert setting["tracks"] > 0  # a random class head keeps most queries
            model_only = setting["model_only"]
            assert model_only["frames_per_s"] == pytest.approx(3 * 8 / model_only["seconds"])
            line = setting["roofline"]
            assert line["gflops_per_frame"] > 0 and line["gmacs_per_frame"] > 0
            for way in ("paper_way", "model_only"):
                assert line[way]["tflop_per_s"] > 0
                assert 0 < line[way]["fraction_of_peak"] <= 1
        # Near-online runs the clip forward for 4 windows of 5 frames, offline once for 8.
        assert (near_online["roofline"]["gflops_per_frame"]
                > offline["roofline"]["gflops_per_frame"])
    # tools/gpu_run.py's summary reads this JSON: one line per dtype and setting.
    lines = load_gpu_run().summarize("inference", captured.out)
    assert [line.split(":")[1] for line in lines] == [
        " near_online T=5 float32", " offline T=8 float32", " near_online T=5 bfloat16",
        " offline T=8 bfloat16"]
    settings = [s for run in result["runs"] for s in run["settings"].values()]
    assert [line.rsplit("; ", 1)[1] for line in lines] == [
        f"{s['tracks']} tracks, {s['results']} results" for s in settings]


def test_inference_benchmark_table_and_bad_dtype(capsys):
    code = cli.main(["benchmark", "--what", "inference", "--height", "32", "--width", "32",
                     "--frames", "2", "--peak-size", "64", "--trials", "1", *FEWER_LAYERS])
    out = capsys.readouterr().out
    assert code == 0 and "near_online" in out and "% of peak" in out and "ratio" in out
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

    tiny_config.model.enc_layers, tiny_config.model.dec_layers = 1, 2  # as FEWER_LAYERS
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


def test_kept_queries_are_calibrated_for_each_setting_s_own_windows(capsys):
    """Near-online (5-frame windows) and offline (here one 12-frame window) each keep about
    --kept-queries queries: a head calibrated on one setting's windows keeps a different
    number in the other's."""
    code = cli.main(["benchmark", "--what", "inference", "--json", "--height", "64",
                     "--width", "96", "--frames", "12", "--kept-queries", "2",
                     "--dtypes", "float32", "--peak-size", "64", "--trials", "1",
                     "--repeats", "1", *FEWER_LAYERS])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    settings = json.loads(captured.out)["runs"][0]["settings"]
    assert settings["offline"]["window_frames"] == 12
    for setting in settings.values():
        assert setting["first_window_kept"] == 2
        assert setting["tracks"] > 0


def test_postprocess_benchmark_json_and_same_masks_as_the_full_size_path(capsys):
    code = cli.main(["benchmark", "--what", "postprocess", "--json", "--height", "90",
                     "--width", "160", "--frames", "8", "--tracks", "3", "--threads", "0", "2",
                     "--repeats", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["what"] == "postprocess" and result["grid"] == [45, 80]  # short side 360
    assert [run["threads"] for run in result["runs"]] == [0, 2]
    for run in result["runs"]:
        assert run["same_masks_as_full_size"] is True and run["ms_per_frame"] > 0
        assert run["tracking_ms_per_frame"] > 0 and run["masks_rle_ms_per_frame"] > 0
    # The stages are parts of the host work: inline (0 threads) they fit in the wall time.
    inline = result["runs"][0]
    assert inline["tracking_ms_per_frame"] + inline["masks_rle_ms_per_frame"] <= \
        inline["ms_per_frame"]
    assert result["full_size_path"]["ms_per_frame"] > 0
    assert result["mask_rle"] == "RleUpsampler"  # auto on a CPU
    (line,) = load_gpu_run().summarize("postprocess", captured.out)
    assert line.startswith("postprocess: RleUpsampler on cpu, 90x160, 3 tracks: 0 thread(s) ")
    code = cli.main(["benchmark", "--what", "postprocess", "--json", "--height", "90",
                     "--width", "160", "--frames", "8", "--tracks", "3", "--threads", "2",
                     "--repeats", "1", "--config.inference.mask_rle=device"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["mask_rle"] == "DeviceRleEncoder"
    assert result["runs"][0]["same_masks_as_full_size"] is True
    code = cli.main(["benchmark", "--what", "postprocess", "--threads", "-1"])
    assert code == 2 and "error: " in capsys.readouterr().err


def test_overlay_benchmark_draws_the_synthetic_objects_and_reports_per_frame(capsys):
    from ifc_jax.benchmarks.overlay import synthetic_tracks
    from ifc_jax.benchmarks.synthetic_video import synthetic_video
    from ifc_jax.data.masks import decode_rle

    frames, tracks = synthetic_tracks(3, 64, 96, 2)
    _, video = synthetic_video(3, 64, 96, seed=0, num_objects=2)
    for t, (frame, masks) in enumerate(video):  # the tracks are the objects' own masks
        np.testing.assert_array_equal(frames[t], frame)
        for track, mask in zip(tracks, masks, strict=True):
            np.testing.assert_array_equal(decode_rle(track.segmentations[t]), mask)
    code = cli.main(["benchmark", "--what", "overlay", "--json", "--height", "64", "--width",
                     "96", "--frames", "5", "--tracks", "3", "--repeats", "1", "--threads",
                     "1", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["what"] == "overlay" and (result["height"], result["width"]) == (64, 96)
    assert (result["frames"], result["tracks"], result["gif_frames"],
            result["keyframes"]) == (5, 3, 5, 4)
    assert 0 < result["covered_fraction"] < 1
    assert result["mp4_codec"] in ("libx264", "mpeg4")
    for stage in ("draw", "mp4"):
        assert result[f"{stage}_ms_per_frame"] > 0
    assert [run["threads"] for run in result["runs"]] == [1, 3]
    assert all(run["overlay_ms_per_frame"] > 0 for run in result["runs"])
    code = cli.main(["benchmark", "--what", "overlay", "--height", "64", "--width", "96",
                     "--frames", "2", "--tracks", "1", "--repeats", "1"])
    captured = capsys.readouterr()
    assert code == 0 and "predict's overlay stage (draw, MP4, GIF, keyframes)" in captured.out


def test_inference_benchmark_times_the_trained_model_of_a_workdir(tmp_path, capsys,
                                                                   tiny_config):
    """--weights: the workdir's checkpoint and the config recorded there, not random weights.
    The checkpoint's no-object logit is raised so far that no query is kept: no tracks."""
    tiny_config.model.enc_layers, tiny_config.model.dec_layers = 1, 2  # as FEWER_LAYERS
    _, variables = benchmark_inference.random_model(tiny_config, seed=3)
    head = dict(variables["params"]["class_embed"])
    last = max(head, key=lambda name: int(name.split("_")[-1]))  # layers_<i>: the logits
    dense = head[last]["dense"]
    head[last] = {"dense": {**dense, "bias": dense["bias"].at[-1].add(1000.0)}}
    workdir = tmp_path / "run"
    checkpoints = Checkpoints(str(workdir), 1, 1)
    checkpoints.save(0, {"step": jnp.zeros((), jnp.int32),
                         "params": {**variables["params"], "class_embed": head},
                         "batch_stats": variables["batch_stats"]}, force=True)
    checkpoints.close()
    write_config_json(str(workdir), tiny_config)
    sizes = ["--height", "64", "--width", "96", "--frames", "8", "--trials", "1", "--repeats",
             "1", "--peak-size", "128"]
    # A step folder of the workdir: its config.json is found two levels up.
    code = cli.main(["benchmark", "--what", "inference", "--json", "--weights",
                     str(workdir / "checkpoints" / "0"), *sizes])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["weights"] == str(workdir / "checkpoints" / "0")
    assert result["config"] == f"{workdir}/config.json"
    for setting in result["runs"][0]["settings"].values():
        assert setting["tracks"] == 0 and setting["results"] == 0
    assert f"weights {workdir}/checkpoints/0," in benchmark_inference.format_result(result)
    # Bad input: one error line naming what is wrong, exit status 2.
    for argv, message in (
            (["--what", "inference", "--weights", str(tmp_path / "nothing")],
             f"{tmp_path / 'nothing'}: no such workdir or checkpoint"),
            (["--what", "train", "--weights", str(workdir)],
             "--weights: only --what inference times a trained model, not train")):
        code = cli.main(["benchmark", *argv, *sizes])
        err = capsys.readouterr().err
        assert code == 2 and f"error: {message}" in err and "Traceback" not in err
