"""tools/gpu_run.py: the GPU measurements as one run on a host without network. Its wheel
handling and a real (smoke-sized) step are checked here; the benchmark tests check that its
summary reads their JSON."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_gpu_run():
    """tools/ is not a package: the script imported by its path."""
    spec = importlib.util.spec_from_file_location(
        "gpu_run", os.path.join(REPO, "tools", "gpu_run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_wheel(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)


def test_only_the_wheels_of_missing_modules_are_unpacked(tmp_path, monkeypatch):
    gpu_run = load_gpu_run()
    monkeypatch.setattr(gpu_run, "WHEEL_MODULES", (("ifc_jax_absent", "ifc_jax_absent_mod"),
                                                   ("numpy", "numpy")))
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    write_wheel(wheels / "ifc_jax_absent-1.0-py3-none-any.whl",
                {"ifc_jax_absent_mod/__init__.py": "VALUE = 7\n"})
    # numpy imports here: its wheel must not shadow the host's own numpy.
    write_wheel(wheels / "numpy-9.9-cp312-cp312-manylinux2014_x86_64.whl",
                {"numpy/__init__.py": "raise ImportError('the carried copy')\n"})
    write_wheel(wheels / "unrelated-1.0-py3-none-any.whl", {"unrelated.py": ""})
    unpacked = gpu_run.unpack_missing_wheels(wheels, site)
    assert unpacked == ["ifc_jax_absent-1.0-py3-none-any.whl"]
    assert (site / "ifc_jax_absent_mod" / "__init__.py").read_text() == "VALUE = 7\n"
    assert not (site / "numpy").exists() and not (site / "unrelated.py").exists()
    assert gpu_run.unpack_missing_wheels(tmp_path / "no-such-folder", site) == []


def test_a_step_writes_its_json_and_the_summary(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "gpu_run.py"), "--smoke", "--out",
         str(out), "--wheels", str(tmp_path / "none"), "--only", "postprocess_host",
         "--budget", "300"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "postprocess_host.json").read_text())
    assert result["what"] == "postprocess" and result["mask_rle"] == "RleUpsampler"
    summary = (out / "summary.txt").read_text()
    assert "unpacked wheels: none" in summary
    assert "postprocess_host: exit 0" in summary
    assert "RleUpsampler on cpu, 180x320, 10 tracks: 1 thread(s)" in summary
    assert "inference_bfloat16" not in summary  # --only


def test_an_unknown_step_is_one_error_line(tmp_path, capsys):
    gpu_run = load_gpu_run()
    with pytest.raises(SystemExit) as stop:
        gpu_run.main(["--out", str(tmp_path / "out"), "--only", "inference", "tests_kernels"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: --only: unknown step(s) inference; the steps: inference_bfloat16," in err
    assert not (tmp_path / "out").exists()  # nothing written before the check
