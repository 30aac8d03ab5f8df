"""A run whose dataset and workdir live in a GCS bucket: train, resume, evaluate.

The bucket is a gcp-storage-emulator started by the test on 127.0.0.1 (tests/gcs_emulator.py:
the emulator plus the generation header of the real service, which tensorstore reads). The
commands reach it through the clients' documented emulator settings: fsspec's gcsfs (files,
through etils.epath with EPATH_USE_TF=false) reads STORAGE_EMULATOR_HOST, and tensorstore
(orbax's checkpoint arrays) reads TENSORSTORE_GCS_HTTP_URL. TensorFlow's own GCS client has no
endpoint setting, so the one thing it would write here, TensorBoard event files, is switched
off (`train.tensorboard=False`) and not covered by this test.

The test reads and writes the bucket through the emulator's JSON API with urllib, not through
the project's code, and checks that nothing was written to local disk.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.test_train_loop import DEVICE_MATCHER, TOY_OVERRIDES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "ifc-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def emulator():
    """The URL of a fresh in-memory GCS emulator holding an empty bucket BUCKET."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "gcs_emulator.py"),
                             str(port), BUCKET],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=2).close()
            break
        except OSError:
            assert proc.poll() is None, "the GCS emulator exited"
            assert time.time() < deadline, "the GCS emulator did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _upload(url: str, name: str, data: bytes) -> None:
    query = urllib.parse.urlencode({"uploadType": "media", "name": name})
    request = urllib.request.Request(f"{url}/upload/storage/v1/b/{BUCKET}/o?{query}",
                                     data=data, method="POST")
    urllib.request.urlopen(request, timeout=30).close()


def _objects(url: str, prefix: str) -> list[str]:
    names, token = [], None
    while True:
        query = {"prefix": prefix, **({"pageToken": token} if token else {})}
        with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o?"
                                    f"{urllib.parse.urlencode(query)}", timeout=30) as reply:
            listing = json.load(reply)
        names += [item["name"] for item in listing.get("items", [])]
        token = listing.get("nextPageToken")
        if not token:
            return names


def _download(url: str, name: str) -> bytes:
    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{url}/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media",
                                timeout=30) as reply:
        return reply.read()


def _local_files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(top, name), folder)
                  for top, _, names in os.walk(folder) for name in names)


@pytest.mark.slow(130)
def test_train_resume_and_evaluate_with_everything_in_a_bucket(tmp_path, emulator):
    from ifc_jax.data.toy import generate_toy_dataset

    local_toy = tmp_path / "toy"
    generate_toy_dataset(str(local_toy), seed=0, num_train=6, num_val=2, height=96, width=144)
    for relative in _local_files(local_toy):
        _upload(emulator, f"toy/{relative}", (local_toy / relative).read_bytes())

    cwd = tmp_path / "cwd"  # the commands run here: nothing may appear in it
    cwd.mkdir()
    env = dict(os.environ, STORAGE_EMULATOR_HOST=emulator, TENSORSTORE_GCS_HTTP_URL=emulator,
               EPATH_USE_TF="false", JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2",
               HOME=str(tmp_path / "home"))
    workdir = f"gs://{BUCKET}/run"
    data = [f"--config.data.root=gs://{BUCKET}/toy", "--config.train.tensorboard=False"]

    def run(*args):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr

    def train(steps):
        return run("train", "--config", "toy", "--workdir", workdir, *data,
                   f"--config.train.num_steps={steps}", *TOY_OVERRIDES, DEVICE_MATCHER)

    train(2)
    resumed = train(3)
    assert f"resumed from {workdir}/checkpoints at step 2" in resumed
    run("evaluate", "--workdir", workdir)  # the config recorded in the bucket

    names = _objects(emulator, "run/")
    steps = {name.split("/")[2] for name in names if name.startswith("run/checkpoints/")}
    assert {"2", "3"} <= steps, names  # (orbax also keeps the first step it saw)
    assert {"run/config.json", "run/train_metrics.jsonl", "run/eval/results.json",
            "run/eval/metrics.json"} <= set(names)
    assert "run/train.lock" not in names  # released at the end
    logged = [json.loads(line)["step"] for line in
              _download(emulator, "run/train_metrics.jsonl").decode().splitlines()]
    assert logged == [1, 2, 3]
    recorded = json.loads(_download(emulator, "run/config.json"))
    assert recorded["data"]["root"] == f"gs://{BUCKET}/toy"
    metrics = json.loads(_download(emulator, "run/eval/metrics.json"))
    assert metrics["run"]["checkpoint_step"] == 3
    assert metrics["run"]["weights"] == workdir
    assert 0.0 <= metrics["AP"] <= 1.0
    results = json.loads(_download(emulator, "run/eval/results.json"))
    assert {entry["video_id"] for entry in results} <= {1, 2}
    assert _local_files(cwd) == []  # no ./gs:/ folder, no stray file
