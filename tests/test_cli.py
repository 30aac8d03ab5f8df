"""The command line: flops and summary output contracts, and one-line errors on bad input."""

import json
import os
import subprocess
import sys

import pytest

from ifc_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_flops_json_is_the_paper_table(capsys):
    code, out, _ = run_cli(capsys, "flops", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert len(rows) == 16
    assert {r["variant"] for r in rows} == {"ifc", "no_comm", "full_thw", "decompose_thw"}
    for row in rows:
        assert set(row) >= {"variant", "height", "width", "frames", "memory", "gflops"}
        assert abs(row["gflops"] - row["paper_gflops"]) / row["paper_gflops"] < 0.005


def test_flops_custom_settings_and_plot(capsys, tmp_path):
    plot = tmp_path / "flops.png"
    code, out, _ = run_cli(capsys, "flops", "--height", "240", "--width", "320", "--frames",
                           "2", "4", "--memory", "2", "8", "--variants", "ifc", "no_comm",
                           "--json", "--plot", str(plot))
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [(r["variant"], r["frames"], r["memory"]) for r in rows] == [
        ("ifc", 2, 2), ("ifc", 2, 8), ("ifc", 4, 2), ("ifc", 4, 8),
        ("no_comm", 2, 0), ("no_comm", 4, 0)]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flops_table_text(capsys):
    code, out, _ = run_cli(capsys, "flops", "--variants", "ifc")
    assert code == 0
    assert "IFC" in out and "paper" in out and "39.73" in out


@pytest.mark.parametrize("argv,needle", [
    (["flops", "--frames", "0"], "--frames"),
    (["flops", "--height", "360", "480", "--width", "640"], "--height"),
    (["flops", "--plot", "out.jpg"], "out.jpg"),
    (["summary", "--config", "configs/nope.py"], "configs/nope.py"),
    (["summary", "--config", "configs/tiny.py", "--config.model.communication=bogus"],
     "config.model.communication"),
    (["summary", "--config", "configs/tiny.py", "--config.model.no_such_key=1"],
     "no_such_key"),
    (["summary", "--config", "configs/tiny.py", "--config.model.num_heads=abc"],
     "num_heads"),
])
def test_bad_input_gives_one_error_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert out == ""


def test_bad_config_file_contents(capsys, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    code, _, err = run_cli(capsys, "summary", "--config", str(broken))
    assert code == 2 and str(broken) in err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    code, _, err = run_cli(capsys, "summary", "--config", str(empty))
    assert code == 2 and "get_config" in err


def test_summary_json(capsys):
    code, out, _ = run_cli(capsys, "summary", "--config", "configs/tiny.py", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["input"] == {"height": 64, "width": 96, "frames": 3}
    assert result["parameters_without_backbone"] == (
        result["parameters_total"] - result["parameters"]["backbone"])
    assert set(result["parameters"]) >= {"backbone", "encoder", "decoder", "spatial_decoder",
                                         "class_embed", "mask_kernel", "input_proj"}
    assert result["gflops_per_frame"]["backbone"] > 0
    assert result["gflops_per_frame"]["encoder"] > 0


def test_summary_r50_counts_15_69m_without_backbone(capsys):
    code, out, _ = run_cli(capsys, "summary", "--config", "configs/ifc_r50_ytvis19.py",
                           "--json")
    assert code == 0
    result = json.loads(out)
    assert abs(result["parameters_without_backbone"] - 15.69e6) / 15.69e6 < 1e-3
    # Encoder share of the paper's table: IFC at 360x640, T=5 is 5.52 GFLOPs per clip.
    assert abs(result["gflops_per_frame"]["encoder"] * 5 - 5.52) / 5.52 < 0.005


def test_main_py_entry_point_runs_as_a_script():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "main.py", "flops", "--variants", "no_comm",
                           "--json"], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["rows"]) == 4
    help_proc = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert help_proc.returncode == 0 and "flops" in help_proc.stdout


def test_bad_no_object_weight_is_refused_before_training(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--config", "configs/tiny.py", "--workdir",
                             str(tmp_path / "wd"), "--config.train.batch_size=8",
                             "--config.train.no_object_weight=0")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "train.no_object_weight" in lines[-1]
    assert not (tmp_path / "wd").exists()


def test_module_entry_point_is_the_same_command_line():
    proc = subprocess.run([sys.executable, "-m", "ifc_jax", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m ifc_jax") and "flops" in proc.stdout
    assert cli.program_name("/usr/bin/ifc-jax") == "ifc-jax"
    assert cli.program_name("main.py") == "python main.py"


@pytest.mark.parametrize("setting,expected", [
    ({}, "{cache}/ifc_jax/xla"),
    ({"JAX_COMPILATION_CACHE_DIR": "/tmp/jax-own"}, "/tmp/jax-own"),
    ({"IFC_JAX_COMPILATION_CACHE": "/tmp/ours", "JAX_COMPILATION_CACHE_DIR": "/x"},
     "/tmp/ours"),
    ({"IFC_JAX_COMPILATION_CACHE": "off"}, "None"),
])
def test_commands_use_a_persistent_compilation_cache(tmp_path, setting, expected):
    env = {key: value for key, value in os.environ.items()
           if key not in ("JAX_COMPILATION_CACHE_DIR", "IFC_JAX_COMPILATION_CACHE")}
    env.update(setting, XDG_CACHE_HOME=str(tmp_path))
    code = ("from ifc_jax.cli import default_compilation_cache\n"
            "folder = default_compilation_cache()\nimport jax\n"
            "print(folder, jax.config.jax_compilation_cache_dir)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    folder, in_jax = proc.stdout.split()
    assert folder == expected.format(cache=tmp_path)
    assert in_jax == (folder if folder != "None" else "None")
