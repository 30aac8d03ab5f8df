"""Per-process batches -> global jax.Arrays sharded over the `data` mesh axis (8 CPU devices)."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from ifc_jax.data import global_batch
from ifc_jax.io import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_mesh() -> Mesh:
    """A 1-D mesh with axis `data` over all devices, as the train loop builds it."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def local_batch(size: int) -> dict[str, np.ndarray]:
    return {"frames": np.arange(size * 2 * 3, dtype=np.uint8).reshape(size, 2, 3),
            "video_id": np.arange(size, dtype=np.int32) + 100,
            "masks": (np.arange(size * 4).reshape(size, 4) % 3 == 0)}


def test_batch_is_split_over_the_data_axis():
    assert jax.device_count() == 8
    mesh = data_mesh()
    batch = global_batch.make_global_batch(local_batch(16), mesh)
    for name, local in local_batch(16).items():
        array = batch[name]
        assert array.shape == local.shape and array.dtype == local.dtype
        assert array.sharding.spec == PartitionSpec("data")
        np.testing.assert_array_equal(np.asarray(array), local)
        shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start)
        assert len(shards) == 8
        for k, shard in enumerate(shards):  # device k holds clips 2k, 2k + 1
            np.testing.assert_array_equal(np.asarray(shard.data), local[2 * k: 2 * k + 2])


def test_other_mesh_axes_get_replicas():
    mesh = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("data", "model"))
    array = global_batch.make_global_batch({"x": np.arange(8.0)}, mesh)["x"]
    assert len(array.addressable_shards) == 8
    by_rows = {}
    for shard in array.addressable_shards:
        by_rows.setdefault(shard.index[0].start, []).append(np.asarray(shard.data))
    assert sorted(by_rows) == [0, 2, 4, 6]
    for start, copies in by_rows.items():
        assert len(copies) == 2  # one copy per `model` device
        for copy in copies:
            np.testing.assert_array_equal(copy, [start, start + 1])


def test_batch_that_does_not_split_is_a_clear_error():
    with pytest.raises(UserError, match="global batch of 6 clips does not split over the 8"):
        global_batch.make_global_batch(local_batch(6), data_mesh())


def test_reader_and_global_batch_import_without_tensorflow():
    """GPU hosts may lack TensorFlow: these modules must not pull it in."""
    modules = ["global_batch", "ytvis", "toy", "clips", "sources", "frames", "masks", "schedule"]
    code = ("import sys\n" + "".join(f"import ifc_jax.data.{m}\n" for m in modules)
            + "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
