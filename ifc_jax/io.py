"""Input and output shared by every stage: the error for bad input, JSON files, atomic writes,
aligned tables, JSON on stdout and PNG figures."""

from __future__ import annotations

import contextlib
import errno
import io as io_module
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

from ifc_jax import storage

# errno values of a write the machine refused (full disk, quota, file-size limit, read-only
# or forbidden folder): reported as one line naming the file, not as a traceback.
WRITE_FAILURE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                        errno.EPERM)


class UserError(Exception):
    """A problem with what the user gave us (a file, a flag, a config value).

    The command line prints `error: <message>` and exits with status 2, without a traceback.
    The message must name the file or flag and say what is wrong with it.
    """


def read_json(path: str, what: str = "JSON file") -> Any:
    """The parsed content of the JSON file at `path`; a missing, unreadable or malformed file
    raises UserError naming it (`what` says what the file should be, e.g. "results file")."""
    if not storage.is_url(path) and _is_device(path):  # /dev/zero would fill the memory
        raise UserError(f"{path}: is a device, expected a {what}")
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError as err:
        raise UserError(f"{path}: {what} not found") from err
    except IsADirectoryError as err:
        raise UserError(f"{path}: is a folder, expected a {what}") from err
    except OSError as err:
        raise UserError(f"{path}: cannot read {what} ({err.strerror or err})") from err
    except Exception as err:  # cloud storage clients raise their own error types
        if not storage.is_url(path):
            raise
        raise UserError(f"{path}: cannot read {what} ({first_line(err)})") from err
    try:
        # From bytes, json detects the encoding the JSON standard allows: UTF-8 with or
        # without a byte-order mark (text mode would refuse the mark), UTF-16 and UTF-32.
        return json.loads(raw)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a {what} (not UTF-8 text)") from err
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: malformed JSON in {what} (line {err.lineno} column "
                        f"{err.colno}: {err.msg})") from err
    except RecursionError as err:
        raise UserError(f"{path}: {what} nests arrays or objects too deeply") from err


def _is_device(path: str) -> bool:
    """Whether `path` is a character or block device (a pipe or a regular file is not)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # reported by the read
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (at most 200 characters), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns."""
    cells = [list(map(str, header))] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def print_json(payload: Any) -> None:
    """The one JSON object a `--json` command prints on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "wb") -> Iterator[IO]:
    """A stream to a temp file beside `path` that becomes `path` only if the block succeeds.

    Readers never see a half-written file, and a failure leaves no temp file behind. The
    file gets the usual permissions (0666 minus the umask), not mkstemp's 0600. In cloud
    storage the content is uploaded as one object when the block succeeds (an object appears
    whole or not at all).
    """
    if storage.is_url(path):
        buffer = io_module.BytesIO() if "b" in mode else io_module.StringIO()
        yield buffer
        data = buffer.getvalue()
        storage.write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"))
        return
    directory = os.path.dirname(os.path.abspath(path))
    temp_path = None
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
        with os.fdopen(handle, mode) as stream:
            yield stream
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)
        os.replace(temp_path, path)
    except OSError as err:
        _remove_quietly(temp_path)
        if err.errno in WRITE_FAILURE_ERRNOS:
            raise UserError(f"{path}: cannot write ({err.strerror})") from err
        raise
    except BaseException:
        _remove_quietly(temp_path)
        raise


def _remove_quietly(path: str | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def check_write_target(path: str, flag: str, *, folder: bool) -> None:
    """Fails (UserError) unless `path` can be written, before any expensive work: a file
    target must not be a folder, a folder target not a file, and the nearest existing folder
    at or above it must take a new file (tried with a nameless temporary file, so read-only
    file systems and root's bypassed permission bits are caught too). URLs are not checked."""
    if storage.is_url(path):
        return
    shown = os.path.abspath(path)
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{shown}: {flag} exists and is not a folder")
    if not folder and os.path.isdir(path):
        raise UserError(f"{shown}: {flag} is a folder; give a file name")
    existing = shown if folder and os.path.isdir(shown) else os.path.dirname(shown)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{shown}: {flag} cannot be written ({existing} is not a folder)")
    if not folder and os.path.exists(path) and not os.access(path, os.W_OK):
        raise UserError(f"{shown}: {flag} cannot be written (the file is read-only)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"{shown}: {flag} cannot be written ({existing}: "
                        f"{err.strerror or err})") from err


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path, "wb") as stream:
        stream.write(data)


def new_figure(columns: int = 1, size: tuple[float, float] = (6, 4)) -> tuple[Any, Any]:
    """A headless matplotlib figure (Agg backend) and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=size, dpi=110)


def save_figure_png(figure: Any, path: str) -> None:
    """Lays out, renders and atomically writes a matplotlib figure as PNG, then closes it."""
    import io

    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
