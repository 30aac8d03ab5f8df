"""`predict` end to end on a frame folder, a video file and several videos (one of them
rotated) in one call, with a random-weight tiny model."""

import json
import logging
import os
import shutil
import subprocess
import sys
import threading

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
from ifc_jax.io import UserError
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


def check_outputs(summary, output, num_frames, height, width, gif_frames, keyframes=4):
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
    assert len(summary["keyframes"]) == keyframes
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


def decode_mp4(path):
    """Every frame of an MP4, (N, H, W, 3) uint8 (PyAV)."""
    import av

    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


class CompileCounter:
    """Counts JAX's traces and backend compilations (jax.monitoring events) while active."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.count = 0
        self.active = True
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.active and event in self.EVENTS:
            self.count += 1

    def close(self):
        self.active = False
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is not None:
            unregister(self._listen)


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_predict_three_videos_one_rotated_compiles_once(capsys, setup, tmp_path, monkeypatch):
    from tests.test_video import write_rotated_video

    # A phone video: stored sideways (96x144 WxH), shown upright at 144x96 like the others,
    # so all three share one model input size (64x96) and one compiled program; read as
    # stored, it would need a second.
    upright_frames = list(synthetic_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=11))
    (tmp_path / "phone").mkdir()
    rotated = str(tmp_path / "phone" / "clip.mp4")  # the same stem as setup's clip.mp4
    stored = write_rotated_video(rotated, upright_frames, -90, fps=15)
    assert stored[0].shape[:2] == (WIDTH, HEIGHT)

    # Count compilations per video: the first compiles, the others reuse its programs.
    counter = CompileCounter()
    per_video = []
    original = api_model.Model.predict_video_input

    def counted(self, video, progress=None):
        before = counter.count
        run = original(self, video, progress)
        per_video.append(counter.count - before)
        return run

    monkeypatch.setattr(api_model.Model, "predict_video_input", counted)
    monkeypatch.setattr(api_model, "PROGRESS_SECONDS", 0.0)
    logger = logging.getLogger("ifc_jax.predict")
    logs = ListHandler()
    logger.addHandler(logs)
    monkeypatch.setattr(logger, "level", logging.INFO)
    output = tmp_path / "out"
    try:
        code, out, err = run_predict(
            capsys, setup, setup["video"], str(output), "--input", setup["folder"], rotated,
            "--min-score", "0", "--gif-frames", "3", "--keyframes", "2", "--png-frames")
    finally:
        counter.close()
        logger.removeHandler(logs)
    assert code == 0, err
    assert len(per_video) == 3 and per_video[0] > 0 and per_video[1:] == [0, 0], per_video
    summary = json.loads(out)
    assert summary["model_input_sizes"] == [[64, 96]] and summary["frames"] == 3 * NUM_FRAMES
    videos = summary["videos"]
    assert [v["output"] for v in videos] == [str(output / n) for n in ("clip", "frames",
                                                                        "clip_2")]
    assert sorted(os.listdir(output)) == ["clip", "clip_2", "frames"]
    assert [v["rotation"] for v in videos] == [0, 0, 270]
    raw = {0: decode_mp4(setup["video"]), 1: np.stack(list(synthetic_frames(
        NUM_FRAMES, HEIGHT, WIDTH, seed=5))), 2: np.stack(upright_frames)}
    for index, video in enumerate(videos):
        assert video["video_size"] == [HEIGHT, WIDTH] and video["frames"] == NUM_FRAMES
        check_outputs(video, video["output"], NUM_FRAMES, HEIGHT, WIDTH, gif_frames=3,
                      keyframes=2)
        overlay = decode_mp4(video["overlay_mp4"])
        assert overlay.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
        # Upright and drawn on: near the raw frames where nothing is drawn, far from them
        # where masks are (the blend moves a pixel half way to the track's colour).
        with open(video["results_file"], encoding="utf-8") as stream:
            masks = np.stack([np.stack([decode_rle(rle) for rle in entry["segmentations"]])
                              for entry in json.load(stream)]).any(axis=0)
        difference = np.abs(overlay.astype(np.int16) - raw[index]).mean(axis=-1)
        assert masks.any() and (~masks).any()
        assert difference[masks].mean() > difference[~masks].mean() + 10.0
        assert video["frame_pngs"] == NUM_FRAMES
        assert sorted(os.listdir(video["frames_dir"])) == [
            f"frame_{t:04d}.png" for t in range(NUM_FRAMES)]
    log_text = "\n".join(logs.lines)
    assert "predict: video 3/3, " in log_text and "ETA" in log_text
    assert f"{3 * NUM_FRAMES - 1}/{3 * NUM_FRAMES} frames" in log_text


def test_a_video_s_pictures_are_drawn_while_the_model_runs_on_the_next(capsys, setup,
                                                                         tmp_path, monkeypatch):
    """Video 1's pictures are drawn while the model predicts video 2 (they wait for it to
    start); a failure drawing video 2's pictures stops the batch with its one error line
    before video 3 writes anything."""
    from ifc_jax import visualize

    for name in ("b", "c"):
        shutil.copy(setup["video"], tmp_path / f"{name}.mp4")
    predicting = []
    next_started = threading.Event()
    original_predict = api_model.Model.predict_video_input

    def predict(self, video, progress=None):
        predicting.append(video.path)
        if len(predicting) == 2:
            next_started.set()
        return original_predict(self, video, progress)

    original_write = visualize.write_overlays
    overlapped = []

    def write(frames, tracks, out_dir, *args, **kwargs):
        if len(overlapped) == 1:
            raise UserError(f"{out_dir}/overlay.gif: no space left on device")
        overlapped.append(next_started.wait(30))  # False if video 2 waited for these
        return original_write(frames, tracks, out_dir, *args, **kwargs)

    monkeypatch.setattr(api_model.Model, "predict_video_input", predict)
    monkeypatch.setattr(visualize, "write_overlays", write)
    output = tmp_path / "out"
    code, out, err = run_predict(capsys, setup, setup["video"], str(output), "--input",
                                 str(tmp_path / "b.mp4"), str(tmp_path / "c.mp4"))
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and overlapped == [True]
    assert lines[-1] == f"error: {output / 'b'}/overlay.gif: no space left on device", lines
    assert len(predicting) == 3  # video 3's tracks were computed beside video 2's pictures
    names = os.listdir(output / "clip")
    assert {"results.json", "overlay.gif", "overlay.mp4"} <= set(names)
    assert len(names) == 3 + sum(name.startswith("keyframe_") for name in names) == 7
    assert os.listdir(output / "b") == ["results.json"]  # as before: tracks, then pictures
    assert not (output / "c").exists()


@pytest.mark.parametrize("case", ["no_match", "no_videos", "missing_among_several"])
def test_bad_batch_input_one_error_line_and_nothing_written(capsys, setup, tmp_path, case):
    if case == "no_match":
        inputs, named = [str(tmp_path / "*.mp4")], str(tmp_path / "*.mp4")
    elif case == "no_videos":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "notes.txt").write_text("x")
        inputs, named = [str(tmp_path / "docs")], str(tmp_path / "docs")
    else:
        inputs = [setup["video"], str(tmp_path / "missing.mp4"), setup["folder"]]
        named = str(tmp_path / "missing.mp4")
    output = tmp_path / "out"
    code = cli.main(["predict", "--config", CONFIG, "--workdir", setup["workdir"], "--input",
                     *inputs, "--output", str(output)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines
    assert not output.exists()


def test_batch_output_folder_taken_by_a_file_fails_before_loading(capsys, setup, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "frames").write_text("a file where the frame folder's outputs would go")
    code = cli.main(["predict", "--config", CONFIG, "--workdir", str(tmp_path / "nowhere"),
                     "--input", setup["video"], setup["folder"], "--output", str(output)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(output / "frames") in lines[0], lines
    assert sorted(os.listdir(output)) == ["frames"]


def test_output_names_are_stems_made_unique(tmp_path):
    from ifc_jax.api.experiment import output_names

    (tmp_path / "walk").mkdir()
    videos = [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mov"),
              str(tmp_path / "clip_2.mp4"), str(tmp_path / "walk"), str(tmp_path / "walk.avi")]
    assert output_names(videos) == ["clip", "clip_2", "clip_2_2", "walk", "walk_2"]


def test_predict_replaces_its_earlier_mp4_and_frame_pngs(tmp_path):
    from ifc_jax.api.experiment import _remove_previous_predict_outputs

    (tmp_path / "frames").mkdir()
    for name in ["overlay.mp4", "results.json", "frames/frame_0001.png", "frames/keep.png",
                 "overlay.mp4.bak"]:
        (tmp_path / name).write_bytes(b"x")
    assert _remove_previous_predict_outputs(str(tmp_path)) == [
        "overlay.mp4", "results.json", "frames/frame_0001.png"]
    assert sorted(os.listdir(tmp_path)) == ["frames", "overlay.mp4.bak"]
    assert os.listdir(tmp_path / "frames") == ["keep.png"]
