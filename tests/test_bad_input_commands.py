"""Bad input to every command: one line `error: ...` on stderr, exit status 2, no traceback,
nothing half-written and nothing deleted (issue 17). One row per case, run in-process."""

import os

import pytest

from ifc_jax import cli
from ifc_jax.api.experiment import _remove_previous_predict_outputs
from ifc_jax.checkpoints import write_config_json
from ifc_jax.config import load_config

SOURCE_BYTES = b"PK\x03\x04 not read: the checks come first"


@pytest.fixture()
def place(tmp_path):
    """A workdir with a recorded tiny config, a .pth, a notes file, a folder that is not
    convert's output, a plain file to put paths under, and a video name."""
    workdir = tmp_path / "workdir"
    write_config_json(str(workdir), load_config("tiny"))
    (tmp_path / "model.pth").write_bytes(SOURCE_BYTES)
    (tmp_path / "notes.txt").write_bytes(b"my notes")
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "keep.bin").write_bytes(b"keep me")
    (tmp_path / "plots.png").mkdir()
    (tmp_path / "clip.mp4").write_bytes(b"not decoded: the checks come first")
    (tmp_path / "evalout" / "results.json").mkdir(parents=True)
    return tmp_path


def snapshot(root):
    return {os.path.relpath(os.path.join(folder, name), root):
            open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(root) for name in names}


READ_ONLY = "/proc/ifc_jax_test"  # a file system that takes no new file, even from root

# (argv with {T} for the temp folder, a substring of the one error line)
CASES = [
    (["evaluate", "--workdir", "{T}/workdir", "--config.inference.window_frames=0"],
     "config.inference.window_frames: must be an integer >= 1, got 0"),
    (["predict", "--workdir", "{T}/workdir", "--input", "{T}/clip.mp4", "--output", "{T}/out",
      "--config.inference.window_stride=-1"],
     "config.inference.window_stride: must be in 1..inference.window_frames"),
    (["summary", "--config", "tiny", "--config.summary.height=-64"],
     "config.summary.height: must be an integer >= 1, got -64"),
    (["summary", "--config", "tiny", "--config.summary.num_frames=0"],
     "config.summary.num_frames: must be an integer >= 1, got 0"),
    (["summary", "--config", "tiny", "--config.train.lr.x=3"],
     "--config.train.lr.x: tiny has no key 'x' in config.train.lr"),
    (["benchmark", "--config", "tiny", "--what", "inference", "--height", "100000", "--width",
      "100000"], "--height/--width: must be in 32..4096 pixels"),
    (["benchmark", "--config", "tiny", "--what", "train", "--batch-size", "0"],
     "--batch-size: must be >= 1"),
    (["flops", "--bogus"], "unrecognized arguments: --bogus"),
    (["convert", "--to", "{T}/x"], "the following arguments are required: --from"),
    (["flops", "--variants", "nope"], "argument --variants: invalid choice: 'nope'"),
    (["nosuchcommand"], "argument COMMAND: invalid choice: 'nosuchcommand'"),
    (["flops", "--plot", "{T}/notes.txt/plot.png"], "notes.txt is not a folder"),
    (["flops", "--plot", "{T}/plots.png"], "--plot is a folder"),
    (["predict", "--workdir", "{T}/workdir", "--input", "{T}/clip.mp4", "--output",
      "{T}/notes.txt/out"], "--output cannot be written"),
    (["predict", "--workdir", "{T}/workdir", "--input", "{T}/clip.mp4", "--output",
      "{T}/notes.txt"], "--output exists and is not a folder"),
    (["convert", "--from", "{T}/model.pth", "--to", "{T}/notes.txt/w", "--config", "tiny"],
     "--to cannot be written"),
    # evaluate checks where it writes before loading the model or predicting anything.
    (["evaluate", "--workdir", "{T}/workdir", "--output", "{T}/notes.txt/out"],
     "--output cannot be written"),
    (["evaluate", "--workdir", "{T}/notes.txt"], "eval: --output cannot be written"),
    (["evaluate", "--workdir", "{T}/workdir", "--output", "{T}/evalout"],
     "results.json: is a folder; evaluate writes this file"),
    # --overwrite replaces only an earlier output of convert: never the source, a file, or a
    # folder without conversion.json.
    (["convert", "--from", "{T}/model.pth", "--to", "{T}/model.pth", "--overwrite",
      "--config", "tiny"], "is (or holds) the --from file"),
    (["convert", "--from", "{T}/model.pth", "--to", "{T}", "--overwrite", "--config", "tiny"],
     "is (or holds) the --from file"),
    (["convert", "--from", "{T}/model.pth", "--to", "{T}/notes.txt", "--overwrite",
      "--config", "tiny"], "is a file without conversion.json"),
    (["convert", "--from", "{T}/model.pth", "--to", "{T}/older", "--overwrite",
      "--config", "tiny"], "is a folder without conversion.json"),
    (["convert", "--from", "{T}/model.pth", "--to", "{T}/older", "--config", "tiny"],
     "already exists (pass --overwrite"),
    (["split", "--annotations", "{T}/missing.json", "--fraction", "0.1", "--train-out",
      "{T}/a.json", "--val-out", "{T}/b.json"], "missing.json"),
    (["split", "--annotations", "{T}/notes.txt", "--fraction", "0.1", "--train-out",
      "{T}/notes.txt/a.json", "--val-out", "{T}/b.json"], "cannot be written"),
    (["split", "--annotations", "{T}/missing.json", "--fraction", "0.1", "--seed", "-1",
      "--train-out", "{T}/a.json", "--val-out", "{T}/b.json"], "--seed: must be a non-neg"),
    (["benchmark", "--what", "postprocess", "--tracks", "0"], "--tracks"),
    (["benchmark", "--what", "inference", "--height", "0"], "--height: must be >= 1 pixel"),
    (["benchmark", "--what", "encoder", "--width", "0"], "--width: must be >= 1 pixel"),
    (["benchmark", "--what", "data", "--toy-root", "{T}/notes.txt"], "is not a folder"),
    (["benchmark", "--what", "overlay", "--height", "8"], "--height/--width"),
    (["benchmark", "--what", "overlay", "--threads", "0"], "--threads must be >= 1"),
    (["benchmark", "--config", "tiny", "--what", "train", "--batch-size", "3"],
     "--batch-size: must be a multiple of config.train.loss_group_size (2"),
]
READ_ONLY_CASES = [
    (["evaluate", "--workdir", "{T}/workdir", "--output", READ_ONLY + "/eval"],
     "--output cannot be written"),
    (["flops", "--plot", READ_ONLY + ".png"], "--plot cannot be written"),
    (["convert", "--from", "{T}/model.pth", "--to", READ_ONLY, "--config", "tiny"],
     "--to cannot be written"),
]


def run_bad(argv, place, capsys):
    argv = [arg.replace("{T}", str(place)) for arg in argv]
    before = snapshot(place)
    code = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert snapshot(place) == before  # nothing written, nothing deleted
    assert not os.path.exists(place / "out") and not os.path.exists(place / "x")
    return lines[0]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_is_one_line(argv, expected, place, capsys):
    assert expected in run_bad(argv, place, capsys)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux's /proc")
@pytest.mark.parametrize(("argv", "expected"), READ_ONLY_CASES)
def test_read_only_targets_are_refused_first(argv, expected, place, capsys):
    assert expected in run_bad(argv, place, capsys)


def test_help_still_prints_usage(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["flops", "--help"])
    assert exited.value.code == 0 and "usage:" in capsys.readouterr().out


def test_opaque_object_message_grammar():
    from ifc_jax.convert.convert import _a

    assert _a("OpaqueObject") == "an OpaqueObject" and _a("Tensor") == "a Tensor"


def test_predict_replaces_only_its_own_earlier_outputs(tmp_path):
    names = ["results.json", "overlay.gif", "keyframe_0003.png", "keyframe_12.png",
             "notes.txt", "keyframe_final.png", "results.json.bak"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = _remove_previous_predict_outputs(str(tmp_path))
    assert removed == ["keyframe_0003.png", "keyframe_12.png", "overlay.gif", "results.json"]
    assert sorted(os.listdir(tmp_path)) == ["keyframe_final.png", "notes.txt",
                                            "results.json.bak"]
