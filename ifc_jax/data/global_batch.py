"""Per-process numpy batches -> global `jax.Array`s sharded over the mesh axis `data`.

Every process builds its own slice of the global batch (pipeline.py); this module stitches
the slices into one array per field with `jax.make_array_from_process_local_data`, split along
the leading (batch) axis over the mesh's `data` axis and replicated over any other axis
(e.g. `model`). No TensorFlow here: it runs wherever JAX runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifc_jax.io import UserError

DATA_AXIS = "data"


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over `data`, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Turns this process's batch (leading axis B_local) into global arrays (B_local * P, ...).

    All processes must call it with the same fields and shapes. The global batch must divide
    evenly over the `data` axis; otherwise a UserError names the sizes.
    """
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"the mesh has no '{DATA_AXIS}' axis (axes: {mesh.axis_names})")
    data_size = mesh.shape[DATA_AXIS]
    sharding = batch_sharding(mesh)
    global_batch = {}
    for name, local in local_batch.items():
        local = np.asarray(local)
        if local.ndim == 0:
            raise ValueError(f"batch field '{name}' has no batch axis")
        global_size = local.shape[0] * jax.process_count()
        if global_size % data_size:
            raise UserError(f"global batch of {global_size} clips does not split over the "
                            f"{data_size} devices of the '{DATA_AXIS}' mesh axis; make "
                            f"config.train.batch_size a multiple of {data_size}")
        global_shape = (global_size, *local.shape[1:])
        global_batch[name] = jax.make_array_from_process_local_data(sharding, local,
                                                                    global_shape)
    return global_batch
