"""`predict` end to end on a frame folder and a video file, with a random-weight tiny model."""

import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ifc_jax import cli
from ifc_jax.api import model as api_model
from ifc_jax.benchmarks.inference import synthetic_frames, write_synthetic_video
from ifc_jax.checkpoints import Checkpoints
from ifc_jax.config import load_config
from ifc_jax.data.clips import load_eval_video
from ifc_jax.data.masks import decode_rle
from ifc_jax.data.sources import class_names_and_ids
from ifc_jax.data.ytvis import Video
from ifc_jax.evaluation.results import video_results
from ifc_jax.inference.loading import load_trained_model
from ifc_jax.inference.predictor import VideoPredictor
from ifc_jax.models.ifc import IFC

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/tiny.py"
NUM_FRAMES, HEIGHT, WIDTH = 7, 96, 144  # the model sees 64x96 (tiny: short side 64)
CATEGORIES = [{"id": 3, "name": "disk"}, {"id": 7, "name": "square"},
              {"id": 9, "name": "triangle"}, {"id": 12, "name": "cross"}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A workdir with a random-init tiny checkpoint, a dataset root with category names, and
    the same 7 frames as a PNG folder and as an mp4."""
    root = tmp_path_factory.mktemp("predict")
    config = load_config(CONFIG)
    model = IFC.from_config(config.model)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1, 64, 64, 3), jnp.uint8),
                                    jnp.zeros((1, 1, 64, 64), bool))
    workdir = str(root / "workdir")
    checkpoints = Checkpoints(workdir, 1, 1)
    checkpoints.save(0, {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
                         "batch_stats": variables["batch_stats"]}, force=True)
    checkpoints.close()
    data_root = root / "data"
    data_root.mkdir()
    (data_root / "valid.json").write_text(json.dumps(
        {"videos": [], "annotations": [], "categories": CATEGORIES}))
    frames = list(synthetic_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=5))
    folder = root / "frames"
    folder.mkdir()
    names = [f"{i:05d}.png" for i in range(NUM_FRAMES)]
    for name, frame in zip(names, frames, strict=True):
        Image.fromarray(frame).save(folder / name)
    video_path = str(root / "clip.mp4")
    write_synthetic_video(video_path, NUM_FRAMES, HEIGHT, WIDTH, fps=20, seed=5)
    return {"root": root, "workdir": workdir, "data_root": str(data_root),
            "folder": str(folder), "names": names, "video": video_path}


def run_predict(capsys, setup, source, output, *extra):
    code = cli.main(["predict", "--config", CONFIG, "--workdir", setup["workdir"], "--input",
                     source, "--output", output, "--json",
                     f"--config.data.root={setup['data_root']}", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_outputs(summary, output, num_frames, height, width, gif_frames):
    with open(os.path.join(output, "results.json"), encoding="utf-8") as stream:
        results = json.load(stream)
    assert summary["results"] == len(results) > 0
    for entry in results:
        assert entry["video_id"] == 1
        assert entry["category_id"] in {c["id"] for c in CATEGORIES}
        assert 0.01 < entry["score"] <= 1.0
        assert len(entry["segmentations"]) == num_frames
        for rle in entry["segmentations"]:
            assert rle["size"] == [height, width]
            assert decode_rle(rle).shape == (height, width)
    with Image.open(os.path.join(output, "overlay.gif")) as gif:
        assert gif.format == "GIF" and gif.n_frames == gif_frames
        assert gif.size == (width, height)
    assert len(summary["keyframes"]) == 4
    for path in summary["keyframes"]:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == (width, height)
            png.load()
    assert not [name for name in os.listdir(output) if name.startswith(".tmp")]
    return results


def test_predict_frame_folder_matches_the_predictor_on_evaluation_frames(capsys, setup,
                                                                        tmp_path):
    output = str(tmp_path / "out")
    code, out, err = run_predict(capsys, setup, setup["folder"], output, "--min-score", "0")
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["frames"], summary["video_size"], summary["model_input_size"]) == (
        NUM_FRAMES, [HEIGHT, WIDTH], [64, 96])
    assert summary["windows"] == 3  # T=5, S=1 over 7 frames
    assert summary["class_names_from"] == os.path.join(setup["data_root"], "valid.json")
    assert summary["tracks_drawn"] == summary["tracks"]  # --min-score 0 draws them all
    results = check_outputs(summary, output, NUM_FRAMES, HEIGHT, WIDTH, gif_frames=NUM_FRAMES)

    # Independent path: evaluation's frame loading and resize, the predictor, video_results.
    config = load_config(CONFIG)
    paths = tuple(os.path.join(setup["folder"], name) for name in setup["names"])
    video = load_eval_video(Video(1, HEIGHT, WIDTH, tuple(setup["names"]), paths),
                            config.data.test_short_side, config.data.test_max_size)
    model, variables = load_trained_model(config, setup["workdir"])
    prediction = VideoPredictor(model, variables, window_frames=5, window_stride=1,
                               match_threshold=0.05).predict(
        video["frames"], NUM_FRAMES, (video["height"], video["width"]), (HEIGHT, WIDTH))
    expected = video_results(1, prediction.class_probs, prediction.segmentations,
                             [c["id"] for c in CATEGORIES], class_threshold=0.01,
                             multi_class=True, drop_empty=False, min_pixels=0)
    assert results == json.loads(json.dumps(expected))


def test_predict_video_file_offline_window(capsys, setup, tmp_path):
    output = str(tmp_path / "out")
    code, out, err = run_predict(capsys, setup, setup["video"], output, "--gif-frames", "3",
                                 "--overlay-max-side", "72",
                                 "--config.inference.window_frames=36")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["frames"] == NUM_FRAMES and summary["video_fps"] == 20.0
    assert summary["windows"] == 1  # offline: one window over the whole (short) video
    with open(os.path.join(output, "results.json"), encoding="utf-8") as stream:
        results = json.load(stream)
    assert results and all(len(e["segmentations"]) == NUM_FRAMES for e in results)
    assert all(e["segmentations"][0]["size"] == [HEIGHT, WIDTH] for e in results)
    with Image.open(os.path.join(output, "overlay.gif")) as gif:
        assert gif.n_frames == 3 and gif.size == (72, 48)  # long side scaled to 72
    assert [os.path.basename(p) for p in summary["keyframes"]] == [
        "keyframe_0000.png", "keyframe_0002.png", "keyframe_0004.png", "keyframe_0006.png"]


def make_bad_input(tmp_path, case):
    if case == "garbage":
        path = tmp_path / "broken.mp4"
        path.write_bytes(np.random.default_rng(1).bytes(2048))
        return str(path), str(path)
    if case == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
        return str(path), str(path)
    if case == "missing":
        return str(tmp_path / "missing.mp4"), str(tmp_path / "missing.mp4")
    folder = tmp_path / "mixed"  # mixed frame sizes
    folder.mkdir()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(folder / "0.png")
    Image.fromarray(np.zeros((48, 32, 3), np.uint8)).save(folder / "1.png")
    return str(folder), str(folder / "1.png")


@pytest.mark.parametrize("case", ["garbage", "empty_folder", "missing", "mixed_sizes"])
def test_bad_input_one_error_line_and_nothing_written(capsys, tmp_path, case):
    source, named = make_bad_input(tmp_path, case)
    output = tmp_path / "out"
    code = cli.main(["predict", "--config", CONFIG, "--workdir", str(tmp_path / "no_workdir"),
                     "--input", source, "--output", str(output)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0]
    assert not output.exists()


@pytest.mark.parametrize("flag,value", [("--min-score", "1.5"), ("--gif-frames", "-1"),
                                        ("--fps", "0")])
def test_bad_flags(capsys, tmp_path, flag, value):
    code = cli.main(["predict", "--config", CONFIG, "--workdir", str(tmp_path), "--input",
                     str(tmp_path), "--output", str(tmp_path / "out"), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0]


def test_missing_checkpoint_is_a_user_error(capsys, setup, tmp_path):
    code = cli.main(["predict", "--config", CONFIG, "--workdir", str(tmp_path / "nowhere"),
                     "--input", setup["folder"], "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(tmp_path / "nowhere") in err[0]


def test_bad_min_track_pixels_fails_before_the_model_loads(capsys, setup, tmp_path):
    code = cli.main(["predict", "--config", CONFIG, "--workdir", str(tmp_path / "nowhere"),
                     "--input", setup["folder"], "--output", str(tmp_path / "out"),
                     "--config.inference.min_track_pixels=-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "min_track_pixels" in err[0]
    assert not (tmp_path / "out").exists()


def test_class_names_from_the_dataset_json_or_generic(tiny_config, tmp_path, caplog,
                                                      monkeypatch):
    tiny_config.data.root = str(tmp_path)
    assert class_names_and_ids(tiny_config.data, 4) == (
        ["class 0", "class 1", "class 2", "class 3"], [1, 2, 3, 4], None)
    (tmp_path / "train.json").write_text(json.dumps({"categories": CATEGORIES[::-1]}))
    names, ids, source = class_names_and_ids(tiny_config.data, 4)
    assert (names, ids) == (["disk", "square", "triangle", "cross"], [3, 7, 9, 12])
    assert source == str(tmp_path / "train.json")
    # A category count that does not fit the model: generic names, and a warning says why.
    (tmp_path / "valid.json").write_text(json.dumps({"categories": CATEGORIES[:2]}))
    monkeypatch.setattr(logging.getLogger("ifc_jax.data"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="ifc_jax.data"):
        assert class_names_and_ids(tiny_config.data, 4)[2] is None
    assert "2 categories" in caplog.text


def test_progress_passes_frames_through_and_logs(monkeypatch, caplog):
    monkeypatch.setattr(api_model, "PROGRESS_SECONDS", 0.0)
    logger = logging.getLogger("ifc_jax.predict")
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.INFO, logger="ifc_jax.predict"):
        assert list(api_model.with_progress(iter(range(5)), 5)) == [0, 1, 2, 3, 4]
    assert "predict: 4/5 frames (80%)" in caplog.text


def test_predict_and_inference_benchmark_import_no_tensorflow():
    # GPU hosts for inference may lack TensorFlow: nothing predict or the inference benchmark
    # imports may pull it in (the data modules they use import it only inside functions).
    modules = ["ifc_jax.commands.predict", "ifc_jax.commands.benchmark",
               "ifc_jax.inference.video", "ifc_jax.visualize",
               "ifc_jax.benchmarks.inference", "ifc_jax.inference.loading",
               "ifc_jax.inference.predictor", "ifc_jax.evaluation.results", "ifc_jax.api",
               "ifc_jax.data.sources", "ifc_jax.data.ytvis", "ifc_jax.config"]
    code = (f"import sys, importlib\nfor name in {modules!r}: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tensorflow_datasets', 'clu'))\nprint(bad)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
