"""A training workdir: writable, one train at a time (stale locks taken over), and resumed
only under a config with the same model and data shapes."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from ifc_jax.checkpoints import write_config_json
from ifc_jax.config import load_config
from ifc_jax.io import UserError
from ifc_jax.train.workdir import (
    LOCK_FILE,
    WorkdirLock,
    changed_keys,
    check_resumable,
    prepare_workdir,
    workdir_lock,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        prepare_workdir(str(path))
    prepare_workdir(str(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir() and not os.listdir(tmp_path / "new" / "run")


@pytest.mark.parametrize("name,folder,needle", [
    ("checkpoints", False, "checkpoints: is not a folder; train keeps its checkpoints there"),
    ("config.json", True, "config.json: is a folder; train records its config in this file"),
    ("config.py", True, "config.py: is a folder; train records its config in this file"),
])
def test_train_paths_of_the_wrong_kind_are_refused_first(tmp_path, name, folder, needle):
    # Found at the first save otherwise: a traceback (and a hung orbax thread) after training.
    (tmp_path / name).mkdir() if folder else (tmp_path / name).write_text("mine")
    with pytest.raises(UserError, match=re.escape(needle)):
        prepare_workdir(str(tmp_path))
    assert (tmp_path / name).is_dir() == folder, "left as it was"


def test_one_train_per_workdir_and_the_lock_is_released(tmp_path):
    with workdir_lock(str(tmp_path)):
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"another train \\(pid {os.getpid()}"):
            WorkdirLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK_FILE).exists()
    with pytest.raises(RuntimeError), workdir_lock(str(tmp_path)):
        raise RuntimeError("a failed run")
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.parametrize("content", ["dead", "garbage"])
def test_the_lock_of_a_process_that_is_gone_is_taken_over(tmp_path, caplog, monkeypatch,
                                                          content):
    import socket

    text = (json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "then"})
            if content == "dead" else "{not json")
    (tmp_path / LOCK_FILE).write_text(text)
    monkeypatch.setattr(logging.getLogger("ifc_jax.train"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="ifc_jax.train"), \
            workdir_lock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text


def test_a_lock_from_another_host_is_not_taken(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere-0"}))
    with pytest.raises(UserError, match="host elsewhere-0"):
        WorkdirLock(str(tmp_path)).acquire()
    assert (tmp_path / LOCK_FILE).exists()


def test_a_second_train_on_a_live_workdir_exits_2_with_one_line(tmp_path):
    workdir = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        import socket

        workdir.mkdir()
        (workdir / LOCK_FILE).write_text(json.dumps(
            {"pid": holder.pid, "host": socket.gethostname(), "started": "now"}))
        proc = subprocess.run(
            [sys.executable, "main.py", "train", "--config", "tiny", "--workdir", str(workdir),
             "--config.train.batch_size=8"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {workdir}: another train (pid {holder.pid}")
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # nothing else was written


def test_resuming_under_other_shapes_is_refused_other_changes_are_logged(tmp_path, caplog,
                                                                        monkeypatch):
    workdir = str(tmp_path)
    write_config_json(workdir, load_config("tiny"))
    check_resumable(workdir, load_config("tiny", ["model.hidden_dim=64"]),
                    has_checkpoints=False)  # nothing to resume: anything goes
    with pytest.raises(UserError, match=r"model.hidden_dim \(32 -> 64\)"):
        check_resumable(workdir, load_config("tiny", ["model.hidden_dim=64"]),
                        has_checkpoints=True)
    with pytest.raises(UserError, match=r"data.pad_width \(96 -> 128\)"):
        check_resumable(workdir, load_config("tiny", ["data.pad_width=128"]),
                        has_checkpoints=True)
    monkeypatch.setattr(logging.getLogger("ifc_jax.train"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="ifc_jax.train"):
        check_resumable(workdir, load_config("tiny", ["train.lr=0.001", "model.dtype=bfloat16",
                                                      "train.num_steps=9"]),
                        has_checkpoints=True)
    assert "config.train.lr changed: 0.0001 -> 0.001" in caplog.text
    assert "config.train.num_steps changed: 6000 -> 9" in caplog.text


def test_changed_keys_compares_nested_values():
    assert changed_keys({"a": {"b": [1, 2], "c": 1}}, {"a": {"b": (1, 2), "c": 2}}) == {
        "a.c": (1, 2)}


def test_the_recorded_config_is_also_a_recipe_that_rebuilds_it(tmp_path):
    config = load_config("ifc_r50_ytvis19", ["train.lr=3e-5", "data.root='/a b/\"q'",
                                             "train.lr_decay_steps=(10, 20)"])
    write_config_json(str(tmp_path), config)
    rebuilt = load_config(str(tmp_path / "config.py"))
    assert rebuilt.to_dict() == config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(config.to_json())
    again = load_config(str(tmp_path / "config.py"), ["train.num_steps=7"])
    assert again.train.num_steps == 7 and again.train.lr_decay_steps == (10, 20)


def test_a_lock_from_another_host_not_refreshed_for_long_is_taken_over(tmp_path, caplog,
                                                                      monkeypatch):
    import time

    from ifc_jax.train import workdir as workdir_module

    stale = time.time() - workdir_module.STALE_LOCK_SECONDS - 5
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "preempted-vm",
                                                   "updated": stale}))
    monkeypatch.setattr(logging.getLogger("ifc_jax.train"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="ifc_jax.train"), \
            workdir_lock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["host"] != "preempted-vm"
    assert "taking over the lock of process 1 on preempted-vm" in caplog.text
    fresh = time.time() - 5
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "live-vm",
                                                  "updated": fresh}))
    with pytest.raises(UserError, match="host live-vm .*last seen [0-9]+ s ago"):
        WorkdirLock(str(tmp_path)).acquire()


def test_the_lock_holder_refreshes_its_lock(tmp_path, monkeypatch):
    import time

    from ifc_jax.train import workdir as workdir_module

    monkeypatch.setattr(workdir_module, "HEARTBEAT_SECONDS", 0.05)
    with workdir_lock(str(tmp_path)):
        first = json.loads((tmp_path / LOCK_FILE).read_text())["updated"]
        deadline = time.time() + 10
        while json.loads((tmp_path / LOCK_FILE).read_text())["updated"] == first:
            assert time.time() < deadline, "the lock was never refreshed"
            time.sleep(0.05)
    assert not (tmp_path / LOCK_FILE).exists()


# Run in the child before main.py: files may not grow past 2 KiB, and a write past it fails
# with EFBIG, as on a full disk (SIGXFSZ ignored, as CPython sets it anyway, so it is no
# kill). Set there rather than through subprocess's preexec_fn, which runs between fork and
# exec in this multithreaded (JAX) process and may deadlock there.
_LIMITED_MAIN = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
sys.argv = ["main.py", *sys.argv[1:]]
runpy.run_path("main.py", run_name="__main__")
"""


def test_a_write_the_machine_refuses_is_one_error_line_and_leaves_no_part_file(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED_MAIN, "train", "--config", "tiny", "--workdir",
         str(workdir)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2",
                 IFC_JAX_COMPILATION_CACHE="off", PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"error: {workdir / 'config.json'}: cannot write (File too large)"
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(workdir)) == []  # no half-written config, the lock released
