"""`python main.py demo` end to end with a very small step count and toy dataset."""

import json
import os

import pytest

from ifc_jax import cli
from tests.test_train_loop import SMALL_MODEL


@pytest.mark.slow(80)
def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    workdir = str(tmp_path / "demo")
    argv = ["demo", "--workdir", workdir, "--json",
            f"--config.data.root={tmp_path / 'toy'}",
            "--config.data.toy.num_train=4", "--config.data.toy.num_val=2",
            "--config.data.toy.min_frames=4", "--config.data.toy.max_frames=6",
            "--config.train.num_steps=2", "--config.train.log_every=1",
            "--config.train.matcher=device", *SMALL_MODEL]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("AP", "AP50", "AP75", "AR1", "AR10"):
        assert -1 <= summary["metrics"][key] <= 1
    for path in (summary["metrics_file"], summary["results_file"], summary["overlay_gif"],
                 *summary["keyframes"]):
        assert os.path.isfile(path), path
    assert summary["final_train_loss"] > 0
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))

    # A second run reuses the finished training and redoes evaluation and pictures.
    assert cli.main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["final_train_loss"] is None  # nothing left to train
    assert again["metrics"] == summary["metrics"]

    # `evaluate --workdir` alone uses the config the training recorded (with the demo's
    # overrides) and reproduces the run's metrics.
    output = str(tmp_path / "evaluated")
    assert cli.main(["evaluate", "--workdir", workdir, "--output", output, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert {key: evaluated["metrics"][key] for key in summary["metrics"]} == summary["metrics"]
    assert evaluated["run"]["checkpoint_step"] == 2
