"""Atomic writes: complete files only, usual permissions, nothing left behind on failure."""

import os
import stat

import pytest

from ifc_jax.evaluation.results import write_results_json
from ifc_jax.io import atomic_write_bytes, atomic_writer


def test_atomic_write_gives_umask_permissions(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write_bytes(str(path), b"abc")
    assert path.read_bytes() == b"abc"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(str(path), "w") as stream:
        stream.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
    with pytest.raises(ValueError):  # NaN scores are refused mid-stream
        write_results_json(str(path), [{"score": 1.0}, {"score": float("nan")}])
    assert path.read_text() == "old"


def test_streamed_results_are_valid_json(tmp_path):
    import json

    entries = [{"video_id": i, "score": 0.5, "category_id": 1, "segmentations": []}
               for i in range(3)]
    path = tmp_path / "r.json"
    write_results_json(str(path), entries)
    assert json.loads(path.read_text()) == entries
    write_results_json(str(path), [])
    assert json.loads(path.read_text()) == []
