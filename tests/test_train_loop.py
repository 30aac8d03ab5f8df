"""The real training loop in subprocesses: resume after SIGKILL, save on SIGTERM, 2 processes."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ifc_jax.train.loop import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tests check behaviour, not accuracy: configs/tiny.py's sizes with fewer transformer
# layers (1 encoder, 2 decoder: the aux-loss path kept), a third less to compile.
SMALL_MODEL = [
    "--config.model.hidden_dim=32", "--config.model.dim_feedforward=64",
    "--config.model.enc_layers=1", "--config.model.dec_layers=2",
    "--config.model.backbone.width=8", "--config.data.train_short_sides=(64,)",
    "--config.data.train_max_size=128", "--config.data.test_short_side=64",
    "--config.data.test_max_size=128", "--config.data.pad_height=64",
    "--config.data.pad_width=96",
]
TOY_OVERRIDES = [  # a small toy dataset and a short run with frequent checkpoints
    *SMALL_MODEL,
    "--config.data.toy.num_train=6", "--config.data.toy.num_val=2",
    "--config.train.batch_size=2", "--config.train.log_every=1",
    "--config.train.checkpoint_every=2",
]
# Executables with host callbacks (the scipy matcher) cannot go into JAX's persistent cache;
# the on-device matcher lets the repeated runs below reuse one compilation. The matchers'
# equality is tested in test_matching.py / test_train_step.py; the 2-process test uses `host`.
DEVICE_MATCHER = "--config.train.matcher=device"


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from ifc_jax.data.toy import generate_toy_dataset

    root = str(tmp_path_factory.mktemp("toy") / "toy")
    generate_toy_dataset(root, seed=0, num_train=6, num_val=2, height=96, width=144)
    return root


def _train_command(workdir, toy_root, steps, *extra, matcher=DEVICE_MATCHER):
    return [sys.executable, "main.py", "train", "--config", "configs/toy.py",
            "--workdir", str(workdir), f"--config.data.root={toy_root}",
            f"--config.train.num_steps={steps}", *TOY_OVERRIDES, matcher, *extra]


def _env(devices=2):
    return dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")


def _run(command, devices=2, timeout=400):
    proc = subprocess.run(command, cwd=REPO, env=_env(devices), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _start_and_signal(command, workdir, after_step, sig, timeout=400):
    """Starts training and sends `sig` once `after_step` appears in the metrics file."""
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while max(read_metrics(str(workdir)), default=0) < after_step:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "training did not reach the step in time"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr


def _checkpoint_steps(workdir):
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


@pytest.mark.slow(150)
def test_resume_after_sigkill_continues_like_an_uninterrupted_run(tmp_path, toy_root):
    resumed_dir, reference_dir = tmp_path / "resumed", tmp_path / "reference"
    code, _ = _start_and_signal(_train_command(resumed_dir, toy_root, 60), resumed_dir, 3,
                                signal.SIGKILL)
    assert code == -signal.SIGKILL
    # Finalised checkpoints only: a save still in flight when the process died is left as a
    # temporary folder, which orbax ignores.
    last_saved = max(_checkpoint_steps(resumed_dir))
    assert last_saved >= 1
    end = last_saved + 3
    proc = _run(_train_command(resumed_dir, toy_root, end))
    assert "resumed from" in proc.stderr and f"at step {last_saved}" in proc.stderr

    _run(_train_command(reference_dir, toy_root, end))
    reference = read_metrics(str(reference_dir))
    assert sorted(reference) == list(range(1, end + 1))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(reference_dir))
    resumed = read_metrics(str(resumed_dir))
    for step in range(last_saved + 1, end + 1):
        for name in ("loss", "loss_ce", "loss_mask", "loss_dice", "grad_norm"):
            assert resumed[step][name] == pytest.approx(reference[step][name], rel=1e-5), (
                step, name)


@pytest.mark.slow(35)
@pytest.mark.parametrize("sig", [signal.SIGINT])  # SIGTERM: the two-process test
def test_sigterm_or_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, toy_root, sig):
    workdir = tmp_path / "preempted"
    code, stderr = _start_and_signal(_train_command(workdir, toy_root, 500), workdir, 3, sig)
    assert code == 0, stderr[-3000:]
    assert f"{signal.Signals(sig).name}: saved a checkpoint" in stderr
    logged = max(read_metrics(str(workdir)))
    saved = max(_checkpoint_steps(workdir))
    assert saved >= 3 and saved >= logged  # saved at the step boundary after the signal


@pytest.mark.slow(45)
def test_a_diverging_run_stops_with_one_line_naming_the_step(tmp_path, toy_root):
    """lr=1e4 makes the loss non-finite within a few steps; with the scipy matcher the NaN
    scores must not end the run inside the host callback before our check names the step."""
    command = _train_command(tmp_path / "diverged", toy_root, 30, "--config.train.lr=1e4",
                             "--config.train.warmup_steps=0",
                             matcher="--config.train.matcher=host")
    proc = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: loss became ") and " at step " in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_processes(workdir, toy_root, steps, port, *extra):
    """Starts the two processes of one job on 127.0.0.1 (4 CPU devices each, batch 8)."""
    procs = []
    for process_id in range(2):
        command = _train_command(
            workdir, toy_root, steps, "--config.train.batch_size=8",
            "--config.distributed.mode=explicit",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={process_id}", *extra)
        procs.append(subprocess.Popen(command, cwd=REPO, env=_env(devices=4),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


def _wait_all(procs, timeout=500):
    outputs = [proc.communicate(timeout=timeout)[1] for proc in procs]
    for proc, stderr in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    return outputs


@pytest.mark.slow(300)
def test_two_processes_agree_and_a_job_preempted_on_one_host_resumes_exactly(tmp_path,
                                                                           toy_root):
    """Two processes (4 devices each) train one model. An uninterrupted job (the scipy host
    matcher, an evaluation at its last step) is the reference; then SIGTERM reaches ONE
    process of a second job: both processes agree on the stop step, save it and exit 0, and
    the resumed job logs the reference's losses."""
    import json

    reference_dir, workdir = tmp_path / "reference", tmp_path / "preempted"
    steps = 6
    outputs = _wait_all(_two_processes(reference_dir, toy_root, steps, _free_port(),
                                       "--config.train.matcher=host",
                                       f"--config.train.eval_every_steps={steps}",
                                       # saved once, at the end: what the evaluation reads
                                       f"--config.train.checkpoint_every={steps}"))
    losses = [[line.split("| loss ")[1].split()[0] for line in stderr.splitlines()
               if "| loss " in line] for stderr in outputs]
    assert len(losses[0]) == steps and losses[0] == losses[1]
    reference = read_metrics(str(reference_dir))  # written by process 0 only
    assert sorted(reference) == list(range(1, steps + 1))
    assert f"{reference[steps]['loss']:.4f}" == losses[0][-1]
    # The evaluation: one val video per process, merged and scored by process 0.
    evaluation = reference_dir / "eval" / f"step_{steps}"
    assert sorted(os.listdir(evaluation)) == ["metrics.json", "results.json"]  # no parts left
    assert 0.0 <= json.loads((evaluation / "metrics.json").read_text())["AP"] <= 1.0
    with open(os.path.join(toy_root, "valid.json"), encoding="utf-8") as stream:
        val_ids = {video["id"] for video in json.load(stream)["videos"]}
    results = json.loads((evaluation / "results.json").read_text())
    assert len(val_ids) == 2 and {entry["video_id"] for entry in results} == val_ids
    assert f"eval at step {steps}: AP " in outputs[0]
    # That evaluation ran on 2 processes x 4 devices; the same checkpoint evaluated on one
    # device gives the same results (bit-identical masks, scores to 1e-6).
    single = tmp_path / "one_device"
    _run([sys.executable, "main.py", "evaluate", "--config", "configs/toy.py", "--workdir",
          str(reference_dir), "--output", str(single), f"--config.data.root={toy_root}",
          *TOY_OVERRIDES], devices=1)
    alone = json.loads((single / "results.json").read_text())
    assert [(e["video_id"], e["category_id"], e["segmentations"]) for e in alone] == [
        (e["video_id"], e["category_id"], e["segmentations"]) for e in results]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(alone, results, strict=True)) <= 1e-6

    # The preempted job runs the on-device matcher (its programs are cached across the
    # launches; it assigns as scipy does, tested in test_train_step.py).
    procs = _two_processes(workdir, toy_root, 500, _free_port())
    deadline = time.time() + 400
    while max(read_metrics(str(workdir)), default=0) < 1:
        assert all(proc.poll() is None for proc in procs), procs[0].communicate()[1][-3000:]
        assert time.time() < deadline, "training did not reach step 1 in time"
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGTERM)  # only the second process is told
    outputs = _wait_all(procs)
    stopped = []
    for stderr in outputs:
        line = next(line for line in stderr.splitlines() if "saved a checkpoint at step" in line)
        stopped.append(int(line.split("at step ")[1].split(";")[0]))
    assert stopped[0] == stopped[1] <= steps - 2, stopped
    assert "SIGTERM: saved" in outputs[1] and "another process was stopped" in outputs[0]
    assert max(_checkpoint_steps(workdir)) == stopped[0]
    assert max(read_metrics(str(workdir))) == stopped[0]

    end = stopped[0] + 2
    resumed_outputs = _wait_all(_two_processes(workdir, toy_root, end, _free_port()))
    assert all(f"at step {stopped[0]}" in stderr for stderr in resumed_outputs)
    resumed = read_metrics(str(workdir))
    for step in range(stopped[0] + 1, end + 1):
        for name in ("loss", "loss_ce", "loss_mask", "loss_dice", "grad_norm"):
            assert resumed[step][name] == pytest.approx(reference[step][name], rel=1e-5), (
                step, name)


@pytest.mark.slow(20)
def test_corrupt_frame_gives_one_error_line_and_no_tensorflow_traceback(tmp_path):
    from ifc_jax.data.toy import generate_toy_dataset

    root = str(tmp_path / "toy")
    generate_toy_dataset(root, seed=5, num_train=2, num_val=1, min_frames=4, max_frames=5)
    frame_dirs = sorted((tmp_path / "toy" / "train" / "JPEGImages").iterdir())
    for frame_dir in frame_dirs:  # every video has an unreadable frame 1
        (frame_dir / "00001.jpg").write_bytes(b"not a jpeg")
    command = [sys.executable, "main.py", "train", "--config", "configs/toy.py",
               "--workdir", str(tmp_path / "wd"), f"--config.data.root={root}",
               "--config.data.dataset=ytvis19", "--config.train.num_steps=3",
               "--config.train.batch_size=2", DEVICE_MATCHER, *SMALL_MODEL]
    env = {k: v for k, v in _env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "00001.jpg: unreadable JPEG" in errors[0]
