"""Reading PyTorch `.pth` and detectron2 `.pkl` checkpoints without PyTorch.

* `.pth` (torch.save, zip format, torch >= 1.6): `<root>/data.pkl` is a pickle whose tensors
  are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls; each storage
  is a persistent id ('storage', torch.<Type>Storage, key, location, numel) naming the raw
  little-endian bytes in `<root>/data/<key>`. Storages are read lazily, only for the tensors
  that are used (an "optimizer" entry is never read).
* `.pkl` (detectron2 ImageNet backbones and model-zoo files): a plain pickle of numpy arrays,
  often written by Python 2, hence `encoding="latin1"` as detectron2 itself reads them.
* The legacy (pre-1.6, non-zip) torch format is refused with a clear message.

Unpickling is restricted, and numpy is never handed anything from the file. A checkpoint is
untrusted input, and numpy's own unpickling entry points are not hardened: a BUILD opcode aimed
at a dtype returned by `numpy.dtype(...)` calls `__setstate__` on numpy's shared, process-wide
dtype singletons (a crash, or every later float32 array corrupted), and declared sizes are
allocated before anything checks them against the data. So `_SafeUnpickler` (the pure-Python
pickle machine, with the opcodes that call or mutate objects replaced) admits only:

* the globals in `_ALLOWED`, every one of them a function of this module or an inert marker:
  - torch: `_rebuild_tensor_v2` / `_rebuild_tensor` (-> `TensorRef`), `_rebuild_parameter`
    (-> its tensor), the storage types `torch.<Type>Storage` (-> `StorageType`);
  - numpy, in exactly the shapes numpy's pickles take: `ndarray` (a marker), `_reconstruct`
    (-> an `_ArraySkeleton` whose BUILD state `(version, shape, dtype, is_fortran, raw bytes)`
    we validate and turn into a fresh array ourselves), `dtype` (-> a `_DtypeSpec` of an
    allow-listed type NAME in `DTYPE_NAMES`; its BUILD state is validated and only picks the
    byte order), `scalar` and protocol 5's `_frombuffer`;
  - `collections.OrderedDict` (args: none, or Python 2's list of pairs), and `_codecs.encode`
    (text codecs only) and `bytes()` (no arguments), which protocol-2 pickles of Python 3 bytes
    call.
* any other global becomes an inert `OpaqueObject` subclass that records its name and runs no
  code; the converter fails if one turns up among the weights it needs and reports it otherwise.
* BUILD only on our own objects (skeletons, dtype specs, opaque objects) and on an OrderedDict
  with a dict of attributes (torch's `_metadata`); REDUCE only on the allowed functions and
  opaque classes; NEWOBJ / INST / OBJ only on opaque classes; SETITEM(S) only on dicts and
  opaque objects, with plain keys (str, bytes, numbers, None, shallow tuples of those: hashing
  a deeply nested tuple recurses in C); APPEND(S) only on lists and opaque objects; extension
  codes and out-of-band buffers are refused.
* sizes are checked before anything is allocated: a length prefix longer than the rest of the
  file, an array whose shape x itemsize differs from its raw bytes, a tensor with more elements
  than its storage or running past it, a storage larger than its zip member, a zip member
  larger than the archive can hold; the file is read through `_ClampedReader`, so no read can
  ask for more bytes than the file has.

Every failure is `UnsafePickleError` (an `UnpicklingError`) inside, and `load_checkpoint` turns
it into a one-line UserError naming the file.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import weakref
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
# numpy dtypes a pickled array or scalar may have, by the name `numpy.dtype` is called with.
DTYPE_NAMES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8",
                         "f2", "f4", "f8", "c8", "c16"})
# The first object of a legacy torch.save file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
MAX_NDIM = 32
MAX_KEY_DEPTH = 4
# Deflate expands at most ~1032:1; a member declaring more is lying about its size.
MAX_DEFLATE_RATIO = 1032


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle does something a checkpoint never does, or declares more than it holds."""


def _int(value: Any, what: str, low: int = 0) -> int:
    if type(value) is not int or value < low:
        raise UnsafePickleError(f"{what} is not an integer >= {low}")
    return value


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) > MAX_NDIM:
        raise UnsafePickleError(f"{what} is not a tuple of at most {MAX_NDIM} sizes")
    return tuple(_int(n, what) for n in value)


@dataclass(frozen=True)
class StorageType:
    """A `torch.<Name>Storage` global: only its element type matters here."""

    name: str

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name]


def _itemsize(storage_dtype: str) -> int:
    return 2 if storage_dtype == "bfloat16" else np.dtype(storage_dtype).itemsize


def _read_member(archive: zipfile.ZipFile, member: str) -> bytes:
    """The bytes of a zip member whose declared size `_check_member` accepted."""
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, RuntimeError,
            ValueError) as err:
        raise ValueError(f"zip member {member} cannot be read ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from err
    except Exception as err:  # zlib.error, lzma/bz2 errors of a corrupt member
        raise ValueError(f"zip member {member} cannot be read ({type(err).__name__})") from err


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
            raw = _read_member(self.archive, self.member)
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


class _ArraySkeleton(OpaqueObject):
    """`numpy._reconstruct(ndarray, (0,), b'b')`: an array waiting for its BUILD state.

    Left unbuilt (no BUILD followed), it stays an opaque object, never an array.
    """

    qualified_name = "numpy.ndarray (without its data)"

    def __init__(self) -> None:
        self.memo_keys: list[int] = []


class _NdarrayMarker:
    """What the global `numpy.ndarray` resolves to: only `_reconstruct` accepts it."""


_NDARRAY = _NdarrayMarker()


@dataclass
class _DtypeSpec:
    """`numpy.dtype(name, align, copy)` of an allow-listed name; BUILD sets the byte order.

    Our own object: numpy's dtype singletons are never handed to BUILD / `__setstate__`.
    """

    name: str
    byteorder: str = "="

    def numpy(self) -> np.dtype:
        dtype = np.dtype(self.name)
        return dtype if dtype.itemsize == 1 else dtype.newbyteorder(self.byteorder)

    def build(self, state: Any) -> None:
        # numpy writes (3, byteorder, subarray, names, fields, elsize, alignment, flags) and,
        # with metadata, a 9th entry; a plain numeric type has no subarray, names or fields,
        # elsize and alignment -1 (its own), flags 0, and only the byte order matters.
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
                and state[5:8] == (-1, -1, 0)
                and (len(state) == 8 or state[8] is None)):
            raise UnsafePickleError(f"unexpected state of numpy dtype {self.name!r}")
        self.byteorder = state[1]


def _dtype(name: Any, align: Any = False, copy: Any = True) -> _DtypeSpec:
    if not isinstance(name, str) or name not in DTYPE_NAMES:
        raise UnsafePickleError(f"numpy dtype {str(name)[:20]!r} is not one of the allowed "
                                f"{', '.join(sorted(DTYPE_NAMES))}")
    if type(align) not in (bool, int) or type(copy) not in (bool, int):
        raise UnsafePickleError("unexpected arguments of numpy.dtype")
    return _DtypeSpec(name)


def _raw_bytes(raw: Any) -> bytes | bytearray:
    if isinstance(raw, str):  # Python 2 pickles, read with encoding="latin1"
        try:
            return raw.encode("latin1")
        except UnicodeEncodeError as err:
            raise UnsafePickleError("array data is text beyond latin-1") from err
    if isinstance(raw, bytes | bytearray):
        return raw
    raise UnsafePickleError(f"array data is {type(raw).__name__}, not bytes")


def _new_array(shape: Any, dtype: Any, raw: Any, fortran: bool, native: bool) -> np.ndarray:
    """A fresh array of ours, after checking that the bytes hold exactly that shape.

    `native`: in the machine's byte order, as numpy's `_reconstruct` path gives them (its
    `_frombuffer` path, protocol 5, keeps the file's).
    """
    shape = _shape(shape, "array shape")
    if not isinstance(dtype, _DtypeSpec):
        raise UnsafePickleError("array dtype is not a numpy.dtype of an allowed name")
    raw = _raw_bytes(raw)
    np_dtype = dtype.numpy()
    count = math.prod(shape)
    if count * np_dtype.itemsize != len(raw):
        raise UnsafePickleError(f"array of shape {shape[:8]} and dtype {dtype.name} needs "
                                f"{count * np_dtype.itemsize} bytes, the file gives {len(raw)}")
    out_dtype = np_dtype.newbyteorder("=") if native else np_dtype
    if count == 0:
        return np.empty(shape, out_dtype)
    flat = np.frombuffer(raw, np_dtype, count)
    return flat.reshape(shape, order="F" if fortran else "C").astype(out_dtype, order="K")


def _reconstruct(cls: Any, shape: Any, base: Any) -> _ArraySkeleton:
    if cls is not _NDARRAY or tuple(shape) != (0,) or base not in (b"b", "b"):
        raise UnsafePickleError("numpy _reconstruct called other than numpy pickles call it")
    return _ArraySkeleton()


def _build_array(state: Any) -> np.ndarray:
    # numpy's ndarray.__reduce__ state: (version 1, shape, dtype, is_fortran, raw bytes); very
    # old pickles lack the version.
    if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
        state = state[1:]
    if not (isinstance(state, tuple) and len(state) == 4 and type(state[2]) in (bool, int)):
        raise UnsafePickleError("unexpected state of a numpy array")
    shape, dtype, fortran, raw = state
    return _new_array(shape, dtype, raw, bool(fortran), native=True)


def _scalar(dtype: Any, raw: Any = None) -> np.generic:
    return _new_array((), dtype, raw, False, native=True)[()]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    if order not in ("C", "F"):
        raise UnsafePickleError("unexpected order of a numpy array")
    return _new_array(shape, dtype, buffer, order == "F", native=False)


def _plain_key(key: Any, depth: int = 0) -> bool:
    if key is None or type(key) in (str, bytes, int, float, bool):
        return True
    return (type(key) is tuple and depth < MAX_KEY_DEPTH
            and all(_plain_key(item, depth + 1) for item in key))


def _check_keys(keys: Any) -> None:
    for key in keys:
        if not _plain_key(key):
            raise UnsafePickleError(f"a dict key or set item of type {type(key).__name__}")


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    if not args:
        return collections.OrderedDict()
    pairs = args[0]
    if (len(args) != 1 or type(pairs) not in (list, tuple)
            or not all(type(p) in (list, tuple) and len(p) == 2 for p in pairs)):
        raise UnsafePickleError("unexpected arguments of collections.OrderedDict")
    _check_keys(p[0] for p in pairs)
    return collections.OrderedDict((p[0], p[1]) for p in pairs)


def _rebuild_tensor(storage: Any, offset: Any, shape: Any, stride: Any, *_: Any) -> Any:
    if not isinstance(storage, LazyStorage):
        return _opaque_class("a torch tensor with an unsupported storage")()
    offset = _int(offset, "tensor offset")
    shape = _shape(shape, "tensor size")
    stride = _shape(stride, "tensor stride")
    if len(stride) != len(shape):
        raise UnsafePickleError("tensor size and stride differ in length")
    count = math.prod(shape)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if count > storage.numel or (count > 0 and last >= storage.numel) or offset > storage.numel:
        raise UnsafePickleError(f"tensor of size {shape[:8]} at offset {offset} does not fit "
                                f"its storage of {storage.numel} elements")
    return TensorRef(storage, offset, shape, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _latin1_bytes(text: Any, encoding: Any = "utf-8") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles of Python 3 bytes call; text codecs only."""
    if (not isinstance(text, str) or not isinstance(encoding, str)
            or encoding.lower().replace("-", "") not in ("latin1", "utf8", "ascii")):
        raise UnsafePickleError("_codecs.encode called other than for bytes")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as err:
        raise UnsafePickleError("_codecs.encode of text outside its codec") from err


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()`, which protocol-2 pickles of an empty bytes object (an empty array) call."""
    if args:
        raise UnsafePickleError("bytes called with arguments")
    return b""


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }
    for name in STORAGE_DTYPES:
        table[("torch", name)] = StorageType(name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _reconstruct
        table[(module, "scalar")] = _scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = _frombuffer
    return table


_ALLOWED = _allowed()
# What REDUCE may call (besides opaque classes).
_CALLABLE = frozenset(value for value in _ALLOWED.values() if callable(value)
                      and not isinstance(value, StorageType))


class _BoundedBytes:
    """The pickle's bytes as a file whose reads can never ask for more than is left."""

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.remaining()
        if n > self.remaining():
            raise UnsafePickleError(f"the pickle declares {n} bytes where {self.remaining()} "
                                    "are left")
        self._pos += n
        return self._data[self._pos - n:self._pos]

    def readline(self) -> bytes:
        end = self._data.find(b"\n", self._pos)
        end = len(self._data) if end < 0 else end + 1
        line, self._pos = self._data[self._pos:end], end
        return line


class _Memo(dict):
    """The memo; remembers under which keys an array skeleton is stored, to swap it later."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, _ArraySkeleton):
            value.memo_keys.append(key)
        super().__setitem__(key, value)


def _op(code: bytes) -> int:
    return code[0]


class _SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler with every opcode that calls or mutates objects restricted.

    See the module docstring for what is allowed and why; torch storages (persistent ids)
    resolve through `storages`.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, data: bytes, storages: Callable[[Any], Any] | None):
        self._source = _BoundedBytes(data)
        super().__init__(self._source, encoding="latin1")
        self.memo = _Memo()
        self._storages = storages

    def load(self) -> Any:
        try:
            return super().load()
        except (UnsafePickleError, MemoryError):
            raise
        except KeyError as err:
            raise UnsafePickleError(f"unknown opcode or memo entry {err}") from err
        except Exception as err:  # IndexError (empty stack), struct.error, TypeError, ...
            reason = str(err).splitlines()[0][:200] if str(err) else ""
            raise UnsafePickleError(f"{type(err).__name__}: {reason}") from err

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        return found if found is not None else _opaque_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise UnsafePickleError("persistent id outside a torch zip checkpoint")
        return self._storages(pid)

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST, OBJ
        if not (isinstance(klass, type) and issubclass(klass, OpaqueObject)):
            raise UnsafePickleError("INST/OBJ of something that is not an unknown class")
        self.append(klass(*args))

    def _reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not isinstance(args, tuple):
            raise UnsafePickleError("REDUCE arguments are not a tuple")
        if not ((isinstance(func, type) and issubclass(func, OpaqueObject))
                or any(func is allowed for allowed in _CALLABLE)):  # `is`: no hashing
            raise UnsafePickleError(f"REDUCE of a {type(func).__name__}, not an allowed call")
        self.stack[-1] = func(*args)

    def _newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)):
            raise UnsafePickleError("NEWOBJ of something that is not an unknown class")
        self.append(cls.__new__(cls, *args))

    def _newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        self.stack.pop()  # args
        cls = self.stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)
                and isinstance(kwargs, dict)):
            raise UnsafePickleError("NEWOBJ_EX of something that is not an unknown class")
        self.append(cls.__new__(cls))

    def _build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _ArraySkeleton):
            array = _build_array(state)
            self.stack[-1] = array
            for key in inst.memo_keys:
                if self.memo.get(key) is inst:
                    dict.__setitem__(self.memo, key, array)
        elif isinstance(inst, _DtypeSpec):
            inst.build(state)
        elif isinstance(inst, OpaqueObject):
            inst.__setstate__(state)
        elif type(inst) is collections.OrderedDict and type(state) is dict:
            if not all(type(key) is str for key in state):
                raise UnsafePickleError("BUILD of an OrderedDict with non-text attributes")
            inst.__dict__.update(state)
        else:
            raise UnsafePickleError(f"BUILD of a {type(inst).__name__}")

    def _setitems(self, items: list) -> None:
        target = self.stack[-1]
        if len(items) % 2 or not isinstance(target, dict | OpaqueObject):
            raise UnsafePickleError(f"SETITEMS on a {type(target).__name__}")
        _check_keys(items[0::2])
        for key, value in zip(items[0::2], items[1::2], strict=True):
            target[key] = value

    def _setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._setitems([key, value])

    def _setitems_op(self) -> None:
        self._setitems(self.pop_mark())

    def _appends(self, items: list) -> None:
        target = self.stack[-1]
        if not isinstance(target, list | OpaqueObject):
            raise UnsafePickleError(f"APPENDS on a {type(target).__name__}")
        target.extend(items)

    def _append(self) -> None:
        self._appends([self.stack.pop()])

    def _appends_op(self) -> None:
        self._appends(self.pop_mark())

    def _additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise UnsafePickleError(f"ADDITEMS on a {type(target).__name__}")
        _check_keys(items)
        target.update(items)

    def _dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise UnsafePickleError("DICT of an odd number of items")
        _check_keys(items[0::2])
        self.append(dict(zip(items[0::2], items[1::2], strict=True)))

    def _frozenset(self) -> None:
        items = self.pop_mark()
        _check_keys(items)
        self.append(frozenset(items))

    def _left(self) -> int:
        """Bytes left to read: in the current protocol-4 frame and in the file after it."""
        frame = self._unframer.current_frame
        in_frame = 0
        if frame is not None:
            with frame.getbuffer() as view:
                in_frame = view.nbytes - frame.tell()
        return in_frame + self._source.remaining()

    def _bytearray8(self) -> None:
        size = int.from_bytes(self.read(8), "little")
        if size > self._left():  # checked before bytearray(size) is allocated
            raise UnsafePickleError(f"the pickle declares {size} bytes where {self._left()} "
                                    "are left")
        self.append(bytearray(self.read(size)))

    def _readonly_buffer(self) -> None:
        if not isinstance(self.stack[-1], bytes | bytearray):
            raise UnsafePickleError("READONLY_BUFFER of something other than bytes")
        self.stack[-1] = bytes(self.stack[-1])

    def _refuse(self) -> None:
        raise UnsafePickleError("extension codes and out-of-band buffers are not supported")

    dispatch[_op(pickle.REDUCE)] = _reduce
    dispatch[_op(pickle.NEWOBJ)] = _newobj
    dispatch[_op(pickle.NEWOBJ_EX)] = _newobj_ex
    dispatch[_op(pickle.BUILD)] = _build
    dispatch[_op(pickle.SETITEM)] = _setitem
    dispatch[_op(pickle.SETITEMS)] = _setitems_op
    dispatch[_op(pickle.APPEND)] = _append
    dispatch[_op(pickle.APPENDS)] = _appends_op
    dispatch[_op(pickle.ADDITEMS)] = _additems
    dispatch[_op(pickle.FROZENSET)] = _frozenset
    dispatch[_op(pickle.DICT)] = _dict
    dispatch[_op(pickle.BYTEARRAY8)] = _bytearray8
    dispatch[_op(pickle.READONLY_BUFFER)] = _readonly_buffer
    for _code in (pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEXT_BUFFER):
        dispatch[_op(_code)] = _refuse


class _ClampedReader(io.BufferedReader):
    """A file whose reads never ask for more than is left: zipfile reads sizes the file states
    (central directory, members) and a plain read would allocate them first."""

    def __init__(self, path: str):
        super().__init__(io.FileIO(path, "rb"))
        self._size = os.path.getsize(path)

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self._size - self.tell())
        return super().read(left if n is None or n < 0 else min(n, left))


def _check_member(archive: zipfile.ZipFile, member: str, archive_size: int) -> zipfile.ZipInfo:
    """The member's entry, if its declared size is one the archive can actually hold."""
    info = archive.getinfo(member)
    if info.compress_size > archive_size:
        raise UnsafePickleError(f"zip member {member} declares {info.compress_size} bytes, "
                                f"the archive has {archive_size}")
    if info.compress_type == zipfile.ZIP_STORED:
        limit = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        limit = MAX_DEFLATE_RATIO * info.compress_size + 1024
    else:
        raise UnsafePickleError(f"zip member {member} uses compression {info.compress_type}, "
                                "which torch.save never writes")
    if info.file_size > limit:
        raise UnsafePickleError(f"zip member {member} declares {info.file_size} bytes, "
                                f"more than its {info.compress_size} stored bytes can hold")
    return info


def _zip_root(archive: zipfile.ZipFile, path: str) -> str:
    pickles = [name for name in archive.namelist() if name.endswith("data.pkl")
               and name.count("/") == 1]
    if len(pickles) != 1:
        raise UserError(f"{path}: a zip file but not a torch checkpoint "
                        "(expected exactly one <name>/data.pkl inside)")
    return pickles[0][: -len("data.pkl")]


def _load_zip(path: str, stream: io.BufferedIOBase) -> Any:
    try:
        archive = zipfile.ZipFile(stream)
    except BaseException:
        stream.close()
        raise
    weakref.finalize(archive, stream.close)  # the archive outlives this call (lazy storages)
    size = os.path.getsize(path)
    root = _zip_root(archive, path)
    names = set(archive.namelist())
    big_endian = False
    if f"{root}byteorder" in names:
        _check_member(archive, f"{root}byteorder", size)
        big_endian = _read_member(archive, f"{root}byteorder").strip() == b"big"
    storages: dict[str, LazyStorage] = {}

    def storage(pid: Any) -> LazyStorage:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError("unsupported persistent id (not a torch storage)")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise UnsafePickleError("unsupported storage type")
        if type(key) is not str:
            raise UnsafePickleError("storage key is not text")
        numel = _int(numel, "storage size")
        member = f"{root}data/{key}"
        if member not in names:
            raise UnsafePickleError(f"storage {member[:200]} is missing from the archive")
        info = _check_member(archive, member, size)
        if numel * _itemsize(storage_type.dtype) > info.file_size:
            raise UnsafePickleError(f"storage {member} declares {numel} elements of "
                                    f"{storage_type.dtype}, its member holds {info.file_size} "
                                    "bytes")
        if key not in storages:
            storages[key] = LazyStorage(archive, member, storage_type.dtype, numel, big_endian)
        return storages[key]

    _check_member(archive, f"{root}data.pkl", size)
    data = _read_member(archive, f"{root}data.pkl")
    return _SafeUnpickler(data, storage).load()


def _load_pickle(path: str) -> Any:
    with open(path, "rb") as stream:
        first = _SafeUnpickler(stream.read(), None).load()
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
        raise UserError(f"{path}: is a folder, not a checkpoint file" if os.path.isdir(path)
                        else f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            # The archive stays open: storages are read lazily, on first use.
            return _load_zip(path, _ClampedReader(path)), "torch zip (.pth)"
        return _load_pickle(path), "pickle (.pkl)"
    except UserError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, KeyError,
            TypeError, AttributeError, IndexError, OverflowError, MemoryError,
            UnicodeDecodeError, OSError, NotImplementedError, RecursionError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: not a readable torch .pth or pickle .pkl checkpoint "
                        f"({type(err).__name__}: {reason[:300]})") from err


def to_numpy(value: Any) -> np.ndarray | None:
    """The array of a loaded tensor (TensorRef or numpy array); None for anything else."""
    if isinstance(value, TensorRef):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    return None
