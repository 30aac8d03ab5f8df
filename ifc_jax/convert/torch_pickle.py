"""Reading PyTorch `.pth` and detectron2 `.pkl` checkpoints without PyTorch.

* `.pth` (torch.save, zip format, torch >= 1.6): `<root>/data.pkl` is a pickle whose tensors
  are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls; each storage
  is a persistent id ('storage', torch.<Type>Storage, key, location, numel) naming the raw
  little-endian bytes in `<root>/data/<key>`. Storages are read lazily, only for the tensors
  that are used (an "optimizer" entry is never read).
* `.pkl` (detectron2 ImageNet backbones and model-zoo files): a plain pickle of numpy arrays,
  often written by Python 2, hence `encoding="latin1"` as detectron2 itself reads them.
* The legacy (pre-1.6, non-zip) torch format is refused with a clear message.

Unpickling is restricted: only the globals in `_ALLOWED` are ever imported or called. Any other
global becomes an inert `OpaqueObject` that records its name and runs no code; the converter
fails if one turns up among the weights it needs and reports it otherwise.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ifc_jax.io import UserError

# torch.<Name>Storage -> numpy dtype of its elements (bfloat16 is decoded by hand).
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
# The first object of a legacy torch.save file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class StorageType:
    """A `torch.<Name>Storage` global: only its element type matters here."""

    name: str

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name]


@dataclass
class LazyStorage:
    """One storage of a zip checkpoint: its bytes are read on first use."""

    archive: zipfile.ZipFile
    member: str
    dtype: str
    numel: int
    big_endian: bool
    _array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._array is None:
            raw = self.archive.read(self.member)
            dtype = "uint16" if self.dtype == "bfloat16" else self.dtype
            np_dtype = np.dtype(dtype).newbyteorder(">" if self.big_endian else "<")
            if len(raw) < self.numel * np_dtype.itemsize:
                raise ValueError(f"storage {self.member} holds {len(raw)} bytes, "
                                 f"{self.numel} x {np_dtype.itemsize} expected")
            values = np.frombuffer(raw, np_dtype, count=self.numel).astype(dtype)
            if self.dtype == "bfloat16":  # the high half of a float32
                values = (values.astype(np.uint32) << 16).view(np.float32)
            self._array = values
        return self._array


@dataclass
class TensorRef:
    """A tensor of a zip checkpoint, materialised by `numpy()`."""

    storage: LazyStorage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def numpy(self) -> np.ndarray:
        flat = self.storage.array()
        if not self.shape:
            return np.array(flat[self.offset])
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if min(self.shape) > 0 and (self.offset < 0 or last >= flat.size):
            raise ValueError(f"tensor of shape {self.shape} runs past its storage "
                             f"({flat.size} elements)")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], self.shape, tuple(s * flat.itemsize for s in self.stride))
        return np.array(view)


class OpaqueObject:
    """Stands in for an object of a class we do not load: it records the name, runs no code.

    `find_class` returns a subclass per unknown global, so REDUCE, NEWOBJ, BUILD, SETITEMS and
    APPENDS on it all work (arguments, state and items are kept, never interpreted).
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # Dict and list subclasses are rebuilt with SETITEMS / APPENDS: keep the items.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("values", []).extend(values)

    def __repr__(self) -> str:
        return f"<{self.qualified_name} (not loaded)>"


def _opaque_class(qualified_name: str) -> type[OpaqueObject]:
    return type("Opaque", (OpaqueObject,), {"qualified_name": qualified_name})


def _rebuild_tensor(storage: Any, offset: int, shape: tuple, stride: tuple, *_: Any) -> Any:
    if isinstance(storage, LazyStorage):
        return TensorRef(storage, int(offset), tuple(shape), tuple(stride))
    return _opaque_class("a torch tensor with an unsupported storage")()


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles of Python 3 bytes call; text codecs only."""
    if encoding.lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise pickle.UnpicklingError(f"unsupported encoding {encoding!r} in the pickle")
    return text.encode(encoding)


def _numpy_global(name: str) -> Callable:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    return {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar,
            "_frombuffer": numeric._frombuffer}[name]


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for name in STORAGE_DTYPES:
        table[("torch", name)] = StorageType(name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _numpy_global("_reconstruct")
        table[(module, "scalar")] = _numpy_global("scalar")
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = _numpy_global("_frombuffer")
    return table


_ALLOWED = _allowed()


class _RestrictedUnpickler(pickle.Unpickler):
    """Imports nothing but `_ALLOWED`; resolves torch storages to `LazyStorage`s."""

    def __init__(self, stream: io.BufferedIOBase, storages: Callable[[tuple], Any] | None):
        super().__init__(stream, encoding="latin1")
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        return _ALLOWED.get((module, name)) or _opaque_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise pickle.UnpicklingError("persistent id outside a torch zip checkpoint")
        return self._storages(pid)


def _zip_root(archive: zipfile.ZipFile, path: str) -> str:
    pickles = [name for name in archive.namelist() if name.endswith("data.pkl")
               and name.count("/") == 1]
    if len(pickles) != 1:
        raise UserError(f"{path}: a zip file but not a torch checkpoint "
                        "(expected exactly one <name>/data.pkl inside)")
    return pickles[0][: -len("data.pkl")]


def _load_zip(path: str) -> Any:
    archive = zipfile.ZipFile(path)
    root = _zip_root(archive, path)
    names = set(archive.namelist())
    big_endian = (f"{root}byteorder" in names
                  and archive.read(f"{root}byteorder").strip() == b"big")
    storages: dict[str, LazyStorage] = {}

    def storage(pid: tuple) -> LazyStorage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r:.80}")
        member = f"{root}data/{key}"
        if member not in names:
            raise pickle.UnpicklingError(f"storage {member} is missing from the archive")
        if key not in storages:
            storages[key] = LazyStorage(archive, member, storage_type.dtype, int(numel),
                                        big_endian)
        return storages[key]

    with archive.open(f"{root}data.pkl") as stream:
        return _RestrictedUnpickler(io.BufferedReader(stream), storage).load()


def _load_pickle(path: str) -> Any:
    with open(path, "rb") as stream:
        first = _RestrictedUnpickler(stream, None).load()
    if isinstance(first, int) and first == LEGACY_MAGIC_NUMBER:
        raise UserError(f"{path}: a legacy (PyTorch < 1.6, non-zip) torch.save file, which is "
                        "not supported; re-save it with a recent PyTorch: "
                        "torch.save(torch.load(OLD), NEW)")
    return first


def load_checkpoint(path: str) -> tuple[Any, str]:
    """(unpickled object, container name) of a `.pth` zip or a `.pkl` pickle.

    Tensors of a zip checkpoint are `TensorRef`s (call `.numpy()`); those of a pickle are numpy
    arrays. Every failure is a UserError naming the file.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path), "torch zip (.pth)"
        return _load_pickle(path), "pickle (.pkl)"
    except UserError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, KeyError,
            TypeError, AttributeError, IndexError, OverflowError, MemoryError,
            UnicodeDecodeError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: not a readable torch .pth or pickle .pkl checkpoint "
                        f"({type(err).__name__}: {reason})") from err


def to_numpy(value: Any) -> np.ndarray | None:
    """The array of a loaded tensor (TensorRef or numpy array); None for anything else."""
    if isinstance(value, TensorRef):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    return None
