"""The Python API: the README's example runs as written, and the application functions use the
config a training recorded in its workdir."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from ifc_jax import api, cli
from ifc_jax.checkpoints import Checkpoints, write_config_json
from ifc_jax.config import load_config
from ifc_jax.io import UserError
from ifc_jax.models.ifc import IFC
from tests.data_helpers import SMALL_TOY, make_small_toy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The README's example names the demo's workdir and val video valid_0037: a small toy split
# with 38 val videos has it.
TOY = {**SMALL_TOY, "num_val": 38, "max_frames": 5}


def readme_example() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as stream:
        readme = stream.read()
    match = re.search(r"<!-- python-api-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its Python API example"
    return match.group(1)


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    """A folder laid out like the demo's: data/toy and workdirs/demo (a random-init tiny
    checkpoint and the config.json a training writes)."""
    base = tmp_path_factory.mktemp("api")
    make_small_toy(str(base / "data" / "toy"), **TOY)
    config = load_config("tiny")
    config.data.root = "data/toy"  # relative, as the demo's
    for key, value in TOY.items():
        config.data.toy[key] = value
    model = IFC.from_config(config.model)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 1, 64, 64, 3), jnp.uint8),
                                    jnp.zeros((1, 1, 64, 64), bool))
    workdir = base / "workdirs" / "demo"
    checkpoints = Checkpoints(str(workdir), 1, 1)
    checkpoints.save(0, {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
                         "batch_stats": variables["batch_stats"]}, force=True)
    checkpoints.close()
    write_config_json(str(workdir), config)
    return base


def test_readme_python_example_runs_as_written(demo_like):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", readme_example()], cwd=demo_like, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    names = {category["name"] for category in json.loads(
        (demo_like / "data" / "toy" / "valid.json").read_text())["categories"]}
    assert 1 <= len(lines) - 1 <= 5
    for line in lines[:-1]:  # "disk       0.27  4 frames"
        name, score, frames, _ = line.split()
        assert name in names and 0 < float(score) <= 1
    video = json.loads((demo_like / "data" / "toy" / "valid.json").read_text())["videos"][37]
    assert lines[-1] == f"({video['length']}, {video['height']}, {video['width']}) bool"


def test_tracks_match_the_results_entries(demo_like, monkeypatch):
    monkeypatch.chdir(demo_like)
    model = api.load("workdirs/demo")
    run = model.predict_video_input(_open("data/toy/valid/JPEGImages/valid_0001"))
    assert len(run.tracks) == len(run.results) > 0
    by_score = sorted(run.results, key=lambda entry: -entry["score"])
    for track, entry in zip(run.tracks, by_score, strict=True):
        assert (track.score, track.category_id) == (entry["score"], entry["category_id"])
        assert track.masks is entry["segmentations"]
        assert model.class_names[track.class_index] == track.class_name
    decoded = model.predict("data/toy/valid/JPEGImages/valid_0001", decode_masks=True)
    assert decoded[0].masks.dtype == bool and decoded[0].masks.ndim == 3


def _open(path):
    from ifc_jax.inference.video import open_video

    return open_video(path)


@pytest.mark.slow(50)
def test_evaluate_uses_the_recorded_config_and_overrides_apply_to_it(demo_like, monkeypatch,
                                                                      capsys):
    monkeypatch.chdir(demo_like)
    # Everything but the overrides comes from workdirs/demo/config.json: the toy dataset
    # with 3 val videos instead of the recorded 38, generated on first use.
    code = cli.main(["evaluate", "--workdir", "workdirs/demo", "--json",
                     "--config.inference.window_frames", "3",
                     "--config.data.root", "data/toy_few", "--config.data.toy.num_val", "3",
                     "--output", "workdirs/demo/eval3"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 3 and "metrics" in summary
    assert summary["run"]["window_frames"] == 3
    assert os.path.isfile("workdirs/demo/eval3/results.json")


def test_a_workdir_without_a_recorded_config_needs_one(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with pytest.raises(UserError, match="no config.json recorded there"):
        api.load(str(workdir))
    with pytest.raises(UserError, match="no such workdir"):
        api.load(str(tmp_path / "missing"))
