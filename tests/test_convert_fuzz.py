"""The checkpoint reader (convert/torch_pickle.py) on hostile and corrupted files.

A checkpoint is untrusted input: whatever its bytes, reading it must either convert or fail
with a one-line UserError naming the file, never crash the process, run code, corrupt numpy,
or allocate more than the file can hold. The fuzz run mutates real-format files (detectron2
style `.pkl` dicts of numpy arrays written by the real `pickle` module, protocols 2 and 4, and
the torch.save `.pth` fixture written by real torch) in ONE child process under an address-space
limit, so a segfault shows up as a crash of the child and a blow-up as a MemoryError there.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ifc_jax.convert.convert import _read_source
from ifc_jax.convert.torch_pickle import load_checkpoint, to_numpy
from ifc_jax.io import UserError

REPO = Path(__file__).resolve().parents[1]
PTH = REPO / "tests" / "fixtures" / "torch_dtypes.pth"
SEED = 17
# Mutants per seed file and kind: 17,500 in all, about 12 s on one core.
COUNTS = {"flip": 3000, "length": 1000, "truncate": 500}
PTH_PICKLE_MUTANTS = 4000  # data.pkl mutated inside a .pth, the zip rewritten with valid CRCs

CHILD = r"""
import io, json, os, pickle, random, resource, sys, time, traceback, zipfile
import numpy as np
from ifc_jax.convert.convert import _materialize
from ifc_jax.convert.torch_pickle import TensorRef, load_checkpoint
from ifc_jax.io import UserError

args = json.loads(sys.argv[1])
status = open("/proc/self/status").read()
vm_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize")))
limit = vm_kib * 1024 + 2 * 1024**3  # at most 2 GiB more than after the imports
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def state():
    return {
        "res2.0.conv1.weight": np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1),
        "fc.bias": np.array([0.5, -1.0, 2.0]),
        "num_batches_tracked": np.array(7, np.int64),
        "mask": np.array([1, 0, 255, 3], np.uint8),
        "bn.running_var": np.asfortranarray(np.arange(4, dtype=np.float32).reshape(2, 2)),
        "scale": np.float32(1.5),
    }

seeds = {}
for protocol in (2, 4):
    seeds[f"pkl{protocol}"] = pickle.dumps(
        {"model": state(), "__author__": "fuzz", "matching_heuristics": True},
        protocol=protocol)
seeds["pth"] = open(args["pth"], "rb").read()
with zipfile.ZipFile(args["pth"]) as archive:
    members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]

rng = random.Random(args["seed"])
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x40, 0x3F)

def flip(data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[at] ^= 1 << rng.randrange(8)
        else:
            data[at] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
    return bytes(data)

def length(data):  # a huge or negative 1-, 4- or 8-byte length / count / index
    data = bytearray(data)
    width = rng.choice((1, 4, 8))
    at = rng.randrange(max(1, len(data) - width))
    value = rng.choice((2**(8 * width) - 1, 2**(8 * width - 1) - 1, 2**(8 * width - 1),
                        rng.randrange(2**(8 * width))))
    data[at:at + width] = value.to_bytes(width, "little")
    return bytes(data)

def truncate(data):
    return data[:rng.randrange(len(data))]

def rezip(mutate):  # a .pth whose data.pkl is mutated; CRCs stay valid
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, mutate(data) if name.endswith("data.pkl") else data)
    return out.getvalue()

mutants = []
for name, data in seeds.items():
    for kind, operator in (("flip", flip), ("length", length), ("truncate", truncate)):
        mutants += [(name, kind, operator(data)) for _ in range(args["counts"][kind])]
operators = (flip, length, truncate)
mutants += [("pth", "data.pkl", rezip(operators[i % 3])) for i in range(args["pth_pickle"])]

def read(path):
    # What `convert` does with a file: load it, then materialise every tensor in it.
    obj, _ = load_checkpoint(path)
    todo, seen, arrays = [("", obj)], set(), 0
    while todo:
        key, value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            todo += [(f"{key}/{k}", v) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            todo += [(f"{key}/{i}", v) for i, v in enumerate(value)]
        elif isinstance(value, TensorRef | np.ndarray | np.generic):
            array = _materialize(value, key, path)
            array.tobytes()  # touch every element
            arrays += 1
    return arrays

def caused_by(err, kind):
    while err is not None:
        if isinstance(err, kind):
            return True
        err = err.__cause__ or err.__context__
    return False

counts = {"converted": 0, "refused": 0, "bug": 0}
by_seed = {}
bugs = []
path = os.path.join(args["tmp"], "mutant")
start = time.perf_counter()
for index, (name, kind, data) in enumerate(mutants):
    with open(path, "wb") as stream:
        stream.write(data)
    try:
        read(path)
        outcome = "converted"
    except UserError as err:
        one_line = "\n" not in str(err) and str(err).startswith(path)
        outcome = "refused" if one_line and not caused_by(err, MemoryError) else "bug"
    except BaseException:
        outcome = "bug"
    counts[outcome] += 1
    by_seed.setdefault(name, {"converted": 0, "refused": 0, "bug": 0})[outcome] += 1
    if outcome == "bug" and len(bugs) < 10:
        bugs.append({"mutant": index, "seed_file": name, "kind": kind, "hex": data.hex(),
                     "error": traceback.format_exc()[-2000:]})
print(json.dumps({"mutants": len(mutants), **counts, "by_seed": by_seed, "bugs": bugs,
                  "seconds": round(time.perf_counter() - start, 2)}))
"""


def test_fuzzed_checkpoints_convert_or_are_refused(tmp_path):
    args = {"seed": SEED, "counts": COUNTS, "pth_pickle": PTH_PICKLE_MUTANTS, "pth": str(PTH),
            "tmp": str(tmp_path)}
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    # A negative return code is a signal: -11 is the segfault this test exists for.
    assert child.returncode == 0, f"reader crashed ({child.returncode}):\n{child.stderr[-3000:]}"
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\nfuzz: {result['mutants']} mutants, {result['converted']} converted, "
          f"{result['refused']} refused, {result['bug']} bugs, {result['seconds']} s; "
          f"by seed file: {result['by_seed']}")
    assert result["bugs"] == [] and result["bug"] == 0
    expected = 3 * sum(COUNTS.values()) + PTH_PICKLE_MUTANTS
    assert result["mutants"] == expected
    assert result["converted"] + result["refused"] == expected
    for name, outcome in result["by_seed"].items():
        # Mutants must reach both outcomes, or the run is not exercising the reader.
        assert outcome["converted"] > 0 and outcome["refused"] > 0, (name, outcome)


# --- Hand-crafted hostile files ------------------------------------------------------------

def _int(value: int) -> bytes:
    """The pickle opcode pushing `value` (as the real pickler writes it)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _text(value: str) -> bytes:
    return pickle.dumps(value, protocol=2)[2:-3]  # BINUNICODE, without BINPUT and STOP


def _refused(path: Path) -> str:
    with pytest.raises(UserError) as raised:
        load_checkpoint(str(path))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def _float32_dtype_is_intact() -> None:
    dtype = np.dtype("f4")
    assert (dtype.itemsize, dtype.byteorder, dtype.names, dtype.kind) == (4, "=", None, "f")
    assert np.ones(3, np.float32).sum() == 3.0


def test_build_on_a_numpy_dtype_is_refused_and_numpy_untouched(tmp_path):
    # numpy.dtype('f4') followed by BUILD with a structured-dtype state: numpy's own reader
    # applies it to the process-wide float32 dtype (the segfault found by fuzzing).
    hostile = {
        "fields": (3, "<", None, ("a",), {"a": 0}, 8, 1, 16),
        "elsize": (3, "<", None, None, None, 1 << 40, -1, 0),
        "not a tuple": "<",
    }
    for name, state in hostile.items():
        state_bytes = pickle.dumps(state, protocol=2)[2:-1]
        payload = (b"\x80\x02cnumpy\ndtype\n" + _text("f4") + b"\x89\x88\x87R"
                   + state_bytes + b"b.")
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(payload)
        assert "numpy dtype" in _refused(path), name
        _float32_dtype_is_intact()
    # The same BUILD on the dtype object of an array, fetched from the memo by BINGET after the
    # array is complete: numpy.dtype(...) REDUCE is memoized by the BINPUT that follows it.
    array = pickle.dumps({"w": np.ones(2, np.float32)}, protocol=2)
    after_dtype = array.index(b"R", array.index(b"\x89\x88\x87"))  # 'f4', False, True
    assert array[after_dtype + 1:after_dtype + 2] == b"q"  # BINPUT <index>
    memo_index = array[after_dtype + 2:after_dtype + 3]
    fields_state = pickle.dumps(hostile["fields"], protocol=2)[2:-1]
    path = tmp_path / "memo.pkl"
    path.write_bytes(array[:-1] + b"h" + memo_index + fields_state + b"b0.")  # BUILD, POP
    assert "numpy dtype" in _refused(path)
    _float32_dtype_is_intact()
    # The unmodified file reads (the test above is not refusing everything).
    path.write_bytes(array)
    np.testing.assert_array_equal(load_checkpoint(str(path))[0]["w"], np.ones(2, np.float32))


def test_huge_declared_shapes_are_refused_before_allocating(tmp_path):
    # An ndarray state declaring 2**40 x 2**40 float32 with 4 bytes of data.
    state = pickle.dumps({"w": np.ones(1, np.float32)}, protocol=2)
    assert state.count(b"K\x01\x85") >= 1
    huge = state.replace(b"K\x01\x85", _int(1 << 40) + _int(1 << 40) + b"\x86", 1)
    path = tmp_path / "huge.pkl"
    path.write_bytes(huge)
    assert "the file gives 4" in _refused(path)
    # A BINUNICODE / BINBYTES8 length far beyond the file.
    for opcode in (b"X\xff\xff\xff\x7f", b"\x8e" + (1 << 62).to_bytes(8, "little"),
                   b"\x96" + (1 << 62).to_bytes(8, "little")):
        path.write_bytes(b"\x80\x04" + opcode + b"abc")
        assert "declares" in _refused(path)
    # A torch tensor larger than its storage, and a storage larger than its zip member.
    for name, numel, size in (("tensor", 4, (1 << 31) - 1), ("storage", 1 << 40, 4)):
        path = tmp_path / f"{name}.pth"
        _write_pth(path, numel, size, storage_bytes=16)
        assert "does not fit" in _refused(path) or "declares" in _refused(path)
    # The same construction with honest sizes converts (the refusals above are about size).
    path = tmp_path / "fine.pth"
    _write_pth(path, 4, 4, storage_bytes=16)
    tensors, _ = load_checkpoint(str(path))
    np.testing.assert_array_equal(to_numpy(tensors["w"]), np.arange(4, dtype=np.float32))


def _write_pth(path: Path, numel: int, size: int, storage_bytes: int) -> None:
    """A torch.save-style zip holding {'w': tensor of `size` floats on a `numel` storage}."""
    data_pkl = (b"\x80\x02}" + _text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
                + b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0")
                + _text("cpu") + _int(numel) + b"tQ"  # BINPERSID
                + _int(0) + _int(size) + b"\x85" + _int(1) + b"\x85" + b"\x89"
                + b"ccollections\nOrderedDict\n)R" + b"tRs.")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/data/0", np.arange(storage_bytes // 4, dtype="<f4").tobytes())
        archive.writestr("archive/version", "3\n")
    path.write_bytes(buffer.getvalue())


def test_a_global_outside_the_allow_list_runs_nothing(tmp_path):
    marker = tmp_path / "executed"
    for protocol in (0, 2, 4):
        path = tmp_path / f"system{protocol}.pkl"
        call = _SystemCall(f"touch {marker}")
        path.write_bytes(pickle.dumps({"model": {"conv1.weight": call}}, protocol=protocol))
        obj, _ = load_checkpoint(str(path))
        assert type(obj["model"]["conv1.weight"]).__name__ == "Opaque"
        assert obj["model"]["conv1.weight"].qualified_name in ("posix.system", "os.system")
        assert to_numpy(obj["model"]["conv1.weight"]) is None
        assert not marker.exists()
    # os.system as the whole file: convert's reading refuses it.
    path = tmp_path / "whole.pkl"
    path.write_bytes(pickle.dumps(_SystemCall(f"touch {marker}"), protocol=2))
    with pytest.raises(UserError) as raised:
        _read_source(str(path))
    assert str(raised.value).startswith(str(path)) and "\n" not in str(raised.value)
    assert "not a dict of tensors" in str(raised.value)
    assert not marker.exists()
    # os.system handed to the allowed numpy reconstruction.
    path = tmp_path / "reconstruct.pkl"
    path.write_bytes(b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncos\nsystem\n"
                     + _int(0) + b"\x85" + _text("b") + b"\x87R.")
    assert "_reconstruct called other than" in _refused(path)
    assert not marker.exists()


class _SystemCall:
    """Pickles as os.system(command), as a malicious checkpoint would."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)
