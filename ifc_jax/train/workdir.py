"""A training workdir before the first step: usable, owned by one run, fit for the config.

* `prepare_workdir`: the folder exists (or is made) and is writable, or one UserError line;
* `WorkdirLock`: WORKDIR/train.lock names the process that trains there; a second `train` on
  the same workdir is refused, and the lock of a process that is gone is taken over;
* `check_resumable`: a workdir with checkpoints keeps its model and data shapes: a config
  that changes them is refused naming the keys; other changes (lr, steps, ...) are logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from ifc_jax.checkpoints import CONFIG_FILE
from ifc_jax.io import UserError

log = logging.getLogger("ifc_jax.train")

LOCK_FILE = "train.lock"
# Keys whose change makes the checkpoints unusable (parameter or batch shapes). The model's
# compute dtype, attention kernel and dropout rate change no shape.
SHAPE_FREE_MODEL_KEYS = ("model.dtype", "model.attention", "model.dropout")
SHAPE_DATA_KEYS = ("data.num_frames", "data.pad_height", "data.pad_width",
                   "data.max_instances")


def prepare_workdir(workdir: str) -> None:
    """Makes `workdir` and checks that files can be written there."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"{workdir}: --workdir exists and is not a folder")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write-test-{os.getpid()}")
        with open(probe, "wb") as stream:
            stream.write(b"ok")
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{workdir}: cannot write in the workdir ({err.strerror})") from err


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """WORKDIR/train.lock while a training runs there (taken by process 0 of a job)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False

    def _create(self) -> bool:
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(self.owner, stream)
        return True

    def acquire(self) -> None:
        if self._create():
            self.held = True
            return
        try:
            with open(self.path, encoding="utf-8") as stream:
                other = json.load(stream)
            pid, host = int(other["pid"]), str(other["host"])
        except (OSError, ValueError, KeyError, TypeError):
            other, pid, host = {}, -1, ""  # unreadable: a write cut short, so stale
        if host == self.owner["host"] and _process_alive(pid):
            raise UserError(f"{os.path.dirname(self.path)}: another train (pid {pid}, started "
                            f"{other.get('started', '?')}) is using this workdir; wait for it "
                            "or use another --workdir")
        if host and host != self.owner["host"]:
            raise UserError(f"{self.path}: a train on host {host} (pid {pid}) holds this "
                            "workdir; if that run is gone, delete the lock file and retry")
        log.warning("%s: taking over the lock of process %s, which is gone", self.path,
                    pid if pid >= 0 else "?")
        os.unlink(self.path)
        if not self._create():
            raise UserError(f"{self.path}: another train took the workdir at the same time")
        self.held = True

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.held = False


@contextlib.contextmanager
def workdir_lock(workdir: str, take: bool = True) -> Iterator[None]:
    """Holds WORKDIR/train.lock for the block (only when `take`: process 0 of a job)."""
    lock = WorkdirLock(workdir)
    if take:
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
    """key -> (recorded value, current value) for every key whose value differs."""
    old, new = _flatten(recorded), _flatten(current)
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)}


def _changes_shapes(key: str) -> bool:
    return (key.startswith("model.") and key not in SHAPE_FREE_MODEL_KEYS) or \
        key in SHAPE_DATA_KEYS


def check_resumable(workdir: str, config: Any, has_checkpoints: bool) -> None:
    """Refuses to resume checkpoints under a config that changes model or data shapes (one
    line naming the keys); logs the other changes against the recorded WORKDIR/config.json."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not has_checkpoints or not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as stream:
            recorded = json.load(stream)
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s); not compared with this run's config", path, err)
        return
    changes = changed_keys(recorded, json.loads(config.to_json()))
    refused = [key for key in changes if _changes_shapes(key)]
    if refused:
        shown = ", ".join(f"{key} ({changes[key][0]!r} -> {changes[key][1]!r})"
                          for key in refused[:6])
        raise UserError(f"{workdir}: its checkpoints were trained with another model or data "
                        f"shape: {shown}; use another --workdir (or init_from to start from "
                        "them)")
    for key, (old, new) in changes.items():
        log.info("resuming with config.%s changed: %r -> %r", key, old, new)
