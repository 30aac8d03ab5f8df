"""`benchmark --what encoder`: the harness runs on CPU at tiny sizes and reports sane rows."""

import json

import pytest

from ifc_jax import cli

TINY = ["--config.model.hidden_dim=32", "--config.model.num_heads=2",
        "--config.model.dim_feedforward=64", "--config.model.num_memory_tokens=2"]


def test_encoder_benchmark_json_and_plot(capsys, tmp_path):
    plot = tmp_path / "encoder.png"
    code = cli.main(["benchmark", "--what", "encoder", "--height", "64", "--width", "64",
                     "--clip-lengths", "1", "4", "--repeats", "1", "--json", "--plot",
                     str(plot), *TINY])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [(row["variant"], row["frames"]) for row in result["rows"]] == [
        (v, t) for v in ("no_comm", "full_thw", "decompose_thw", "ifc") for t in (1, 4)]
    assert all(row["milliseconds"] > 0 for row in result["rows"])
    # GFLOPs beside the times come from the FLOPs counter: full THW grows superlinearly.
    full = {row["frames"]: row["gflops"] for row in result["rows"]
            if row["variant"] == "full_thw"}
    assert full[4] > 4 * full[1]
    assert set(result["ratios"]["ifc_over_no_comm"]) == {"1", "4"}  # JSON object keys
    # Per-frame growth is the per-frame time at T=4 over that at T=1, from the rows.
    ms = {(row["variant"], row["frames"]): row["milliseconds"] for row in result["rows"]}
    growth = result["ratios"]["per_frame_growth"]
    assert abs(growth["ifc"] - (ms[("ifc", 4)] / 4) / ms[("ifc", 1)]) < 1e-9
    assert all(row["milliseconds_per_frame"] * row["frames"]
               == pytest.approx(row["milliseconds"], rel=1e-12) for row in result["rows"])
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_encoder_benchmark_bad_flags(capsys):
    code = cli.main(["benchmark", "--what", "encoder", "--variants", "bogus", *TINY])
    assert code == 2 and "bogus" in capsys.readouterr().err
