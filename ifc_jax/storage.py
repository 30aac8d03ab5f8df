"""Files on local disk or in cloud storage (gs://, s3://, ...): the one path layer.

Every file the project reads or writes (workdirs, checkpoints, configs, metric logs, results,
datasets) goes through these functions, so `--workdir gs://bucket/run` or
`config.data.root=gs://bucket/ytvis` work like local folders. Local paths take the `os`
calls (exact errors, atomic renames); URLs take `etils.epath`, which uses TensorFlow's GCS
client when TensorFlow is installed and fsspec (`gcsfs`) otherwise (`EPATH_USE_TF=false`
forces fsspec; `STORAGE_EMULATOR_HOST` then points it at an emulator). Orbax checkpoints take
the same URLs natively (tensorstore for the arrays).

Object stores have no folders, appends or atomic renames: `makedirs` is a no-op there,
appending rewrites the object, and `replace` copies then deletes.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from typing import IO, Any


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names cloud storage ('gs://bucket/x') rather than a local file."""
    return "://" in os.fspath(path)


def _epath(path: str) -> Any:
    from etils import epath  # imported on first use of a URL only

    return epath.Path(path)


def absolute(path: str) -> str:
    """`path` made absolute; URLs are returned as they are (os.path.abspath would turn
    'gs://b/x' into './gs:/b/x')."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    """`base`/`parts...` for local paths and URLs alike."""
    base = os.fspath(base)
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def dirname(path: str) -> str:
    """The folder holding `path` (the bucket prefix for a URL)."""
    path = os.fspath(path)
    return posixpath.dirname(path.rstrip("/")) if is_url(path) else \
        os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
    path = os.fspath(path).rstrip("/")
    return posixpath.basename(path) if is_url(path) else os.path.basename(path)


def exists(path: str) -> bool:
    return _epath(path).exists() if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _epath(path).is_dir() if is_url(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
    if is_url(path):
        target = _epath(path)
        return target.exists() and not target.is_dir()
    return os.path.isfile(path)


def listdir(path: str) -> list[str]:
    """Names in folder `path` (empty for a missing prefix in cloud storage)."""
    if is_url(path):
        folder = _epath(path)
        return [child.name for child in folder.iterdir()] if folder.exists() else []
    return os.listdir(path)


def makedirs(path: str) -> None:
    """Makes folder `path` and its parents (nothing to make in cloud storage)."""
    if is_url(path):
        _epath(path).mkdir(parents=True, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "rb") -> IO:
    """`open(path, mode)`; text modes are UTF-8."""
    if is_url(path):
        return _epath(path).open(mode)
    return open(path, mode, encoding=None if "b" in mode else "utf-8")


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as stream:
        return stream.read()


def _named(err: OSError, path: str) -> OSError:
    """`err` with `path` as its filename (writes through a stream raise without one)."""
    if err.filename is None and err.errno is not None:
        return type(err)(err.errno, err.strerror, path)
    return err


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` in one go (an object upload is all or nothing; for local files
    prefer io.atomic_write_bytes)."""
    try:
        with open_file(path, "wb") as stream:
            stream.write(data)
    except OSError as err:
        raise _named(err, path) from err


def append_text(path: str, text: str) -> None:
    """Appends `text` to file `path` (cloud storage objects cannot grow: the object is read
    and rewritten, which suits small logs)."""
    if is_url(path):
        previous = read_bytes(path) if isfile(path) else b""
        write_bytes(path, previous + text.encode("utf-8"))
    else:
        try:
            with open(path, "a", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as err:
            raise _named(err, path) from err


def remove(path: str) -> None:
    """Deletes file `path`; a missing one is not an error."""
    if is_url(path):
        _epath(path).unlink(missing_ok=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def replace(source: str, target: str) -> None:
    """Moves file `source` over `target` (atomic on local disk; copy + delete in cloud
    storage, where each object still appears whole)."""
    if is_url(source) or is_url(target):
        _epath(source).copy(target, overwrite=True)
        _epath(source).unlink(missing_ok=True)
    else:
        os.replace(source, target)


def rename_folder(source: str, target: str) -> None:
    """Moves folder `source` to `target` (cloud storage: every object under it)."""
    if not is_url(source):
        os.rename(source, target)
        return
    source_path = _epath(source)
    for child in list(source_path.iterdir()):
        destination = join(target, child.name)
        if child.is_dir():
            rename_folder(os.fspath(child), destination)
        else:
            child.copy(destination, overwrite=True)
            child.unlink()
