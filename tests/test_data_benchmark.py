"""`python main.py benchmark --what data --json`: one JSON object on stdout, paper settings."""

import json

from ifc_jax import cli
from tests.data_helpers import SMALL_TOY


def test_data_benchmark_prints_one_json_object(tmp_path, capsys):
    toy_overrides = [f"--config.data.toy.{key}={value}" for key, value in SMALL_TOY.items()]
    status = cli.main(["benchmark", "--config", "configs/tiny.py", "--what", "data", "--json",
                       "--batches", "2", "--warmup", "1", "--batch-size", "2",
                       "--toy-root", str(tmp_path / "toy"), *toy_overrides])
    assert status == 0
    result = json.loads(capsys.readouterr().out)  # nothing else on stdout
    assert result["what"] == "data" and result["clips_per_s"] > 0
    assert result["settings"]["num_frames"] == 5
    assert result["settings"]["short_sides"] == [360, 480]
    assert result["settings"]["max_size"] == 1333
    assert result["settings"]["pad"] == [480, 864]
    assert result["batch_size"] == 2 and result["num_batches"] == 2
    assert result["num_videos"] == SMALL_TOY["num_train"]


def test_bad_arguments_are_user_errors(capsys):
    assert cli.main(["benchmark", "--what", "data", "--batches", "0"]) == 2
    assert "--batches must be >= 1" in capsys.readouterr().err
