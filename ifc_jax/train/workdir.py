"""A training workdir before the first step: usable, owned by one run, fit for the config.

* `prepare_workdir`: the folder exists (or is made) and is writable, or one UserError line;
* `WorkdirLock`: WORKDIR/train.lock names the process that trains there and is refreshed
  every minute; a second `train` on the same workdir is refused, and the lock of a process
  that is gone (same host: no such pid; another host or cloud storage: not refreshed for
  `STALE_LOCK_SECONDS`, e.g. a preempted VM) is taken over;
* `check_resumable`: a workdir with checkpoints keeps its model and data shapes: a config
  that changes them is refused naming the keys; other changes (lr, steps, ...) are logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ifc_jax import storage
from ifc_jax.checkpoints import CHECKPOINT_FOLDER, CONFIG_FILE, CONFIG_RECIPE_FILE
from ifc_jax.io import UserError, atomic_write_bytes, first_line

log = logging.getLogger("ifc_jax.train")

LOCK_FILE = "train.lock"
HEARTBEAT_SECONDS = 60.0  # how often the lock holder rewrites its "updated" time
# A lock not refreshed for this long belongs to a run that is gone (a preempted or deleted VM
# cannot release it). Long enough for a slow object store to miss a few heartbeats.
STALE_LOCK_SECONDS = 600.0
# Keys whose change makes the checkpoints unusable (parameter or batch shapes). The model's
# compute dtype, attention kernel and dropout rate change no shape.
SHAPE_FREE_MODEL_KEYS = ("model.dtype", "model.attention", "model.dropout")
SHAPE_DATA_KEYS = ("data.num_frames", "data.pad_height", "data.pad_width",
                   "data.max_instances")


def prepare_workdir(workdir: str) -> None:
    """Makes `workdir` and checks that files can be written there."""
    try:
        if storage.exists(workdir) and not storage.isdir(workdir):
            raise UserError(f"{workdir}: --workdir exists and is not a folder")
        storage.makedirs(workdir)
        _check_own_paths(workdir)
        probe = storage.join(workdir, f".write-test-{socket.gethostname()}-{os.getpid()}")
        storage.write_bytes(probe, b"ok")
        storage.remove(probe)
    except UserError:
        raise
    except OSError as err:
        raise UserError(f"{workdir}: cannot write in the workdir "
                        f"({err.strerror or err})") from err
    except Exception as err:  # cloud storage clients raise their own error types
        if not storage.is_url(workdir):
            raise
        raise UserError(f"{workdir}: cannot write in the workdir ({first_line(err)})") from err


def _check_own_paths(workdir: str) -> None:
    """UserError if a path train writes in `workdir` is there as the wrong kind (a file where
    the checkpoint folder goes, a folder where config.json goes): found only at the first
    save otherwise, after the first steps, as a traceback."""
    checkpoints = storage.join(workdir, CHECKPOINT_FOLDER)
    if storage.exists(checkpoints) and not storage.isdir(checkpoints):
        raise UserError(f"{checkpoints}: is not a folder; train keeps its checkpoints there "
                        "(move it away or give another --workdir)")
    for name in (CONFIG_FILE, CONFIG_RECIPE_FILE):
        if storage.isdir(storage.join(workdir, name)):
            raise UserError(f"{storage.join(workdir, name)}: is a folder; train records its "
                            "config in this file (move it away or give another --workdir)")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """WORKDIR/train.lock while a training runs there (taken by process 0 of a job).

    On local disk the lock is created exclusively (O_EXCL); in cloud storage, which has no
    exclusive create, it is checked and then written (two trains started within the same
    second could both pass; the usual mistake, a second train on a live run, is caught).
    """

    def __init__(self, workdir: str):
        self.path = storage.join(workdir, LOCK_FILE)
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps({**self.owner, "updated": time.time()}).encode()

    def _create(self) -> bool:
        if storage.is_url(self.path):
            if storage.exists(self.path):
                return False
            storage.write_bytes(self.path, self._content())
            return True
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "wb") as stream:
            stream.write(self._content())
        return True

    def _read_other(self) -> dict[str, Any]:
        try:
            other = json.loads(storage.read_bytes(self.path))
            return {"pid": int(other["pid"]), "host": str(other["host"]),
                    "started": other.get("started", "?"),
                    "updated": float(other.get("updated", time.time()))}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError):
            return {"pid": -1}  # unreadable: a write cut short, so stale

    def _is_stale(self, other: dict[str, Any]) -> bool:
        if not other.get("host"):
            return True
        if other["host"] == self.owner["host"]:
            return not _process_alive(other["pid"])
        return time.time() - other["updated"] > STALE_LOCK_SECONDS

    def acquire(self) -> None:
        if not self._create():
            other = self._read_other()
            if other and not self._is_stale(other):
                workdir = storage.dirname(self.path)
                if other["host"] == self.owner["host"]:
                    raise UserError(f"{workdir}: another train (pid {other['pid']}, started "
                                    f"{other['started']}) is using this workdir; wait for "
                                    "it or use another --workdir")
                seen = int(time.time() - other["updated"])
                raise UserError(f"{self.path}: a train on host {other['host']} (pid "
                                f"{other['pid']}, last seen {max(seen, 0)} s ago) holds this "
                                f"workdir; a lock not refreshed for {STALE_LOCK_SECONDS:.0f} "
                                "s is taken over (or delete the lock file if that run is "
                                "gone)")
            log.warning("%s: taking over the lock of process %s, which is gone", self.path,
                        f"{other.get('pid')} on {other.get('host')}"
                        if other.get("host") else "?")
            storage.remove(self.path)
            if not self._create():
                raise UserError(f"{self.path}: another train took the workdir at the same "
                                "time")
        self.held = True
        self._heartbeat = threading.Thread(target=self._refresh, name="train.lock heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def _refresh(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                atomic_write_bytes(self.path, self._content())
            except Exception as err:  # a hiccup of the store must not kill the training
                log.warning("%s: could not refresh the lock (%s)", self.path, err)

    def release(self) -> None:
        if self.held:
            self._stop.set()
            if self._heartbeat is not None:
                self._heartbeat.join()
            storage.remove(self.path)
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
    path = storage.join(workdir, CONFIG_FILE)
    if not has_checkpoints or not storage.isfile(path):
        return
    try:
        recorded = json.loads(storage.read_bytes(path))
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
