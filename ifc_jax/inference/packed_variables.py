"""Model variables as one flat buffer per dtype, for the predictor's jitted programs.

A jitted call flattens its arguments and checks every leaf (its type, device, layout) on the
calling thread before the program starts. IFC's variables have hundreds of leaves, so with
the variables as a tree most of each `encode_frames` or `run_windows` call's dispatch went to
them (measured in docs/inference.md#frame-features). The predictor makes one such call per
chunk and per window batch, on the thread that also tracks windows: dispatch time is host
time taken from the tracker and, on a GPU, time the device may wait.

`PackedVariables` is a pytree whose leaves are the buffers (one per dtype, leaves in tree
order) and whose static part is the layout (tree structure, each leaf's shape, dtype and
place): jit keys its compiled programs on the layout, so variables of another structure or
shape compile anew instead of being misread. `unpack()` inside a jitted program gives the
original tree back by static slices and reshapes: the same values bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Layout:
    """The static part of `PackedVariables`: the tree's structure, and per leaf (in the
    tree's leaf order) its buffer index, offset in that buffer, shape and dtype."""

    treedef: Any
    leaves: tuple[tuple[int, int, tuple[int, ...], str], ...]


@jax.tree_util.register_pytree_node_class
class PackedVariables:
    """A variables tree packed into one flat buffer per dtype (see the module docstring)."""

    def __init__(self, buffers: tuple[jax.Array, ...], layout: Layout):
        self.buffers, self.layout = tuple(buffers), layout

    @classmethod
    def pack(cls, variables: Any) -> PackedVariables:
        """Packs a tree of arrays (on one device: the buffers are made where the leaves are),
        or of `jax.ShapeDtypeStruct`s (then the buffers are too: FLOP counting traces the
        programs without allocating the variables)."""
        leaves, treedef = jax.tree_util.tree_flatten(variables)
        leaves = [leaf if isinstance(leaf, jax.ShapeDtypeStruct | jax.Array) else
                  jnp.asarray(leaf) for leaf in leaves]  # numpy arrays, Python numbers
        groups: dict[str, list[Any]] = {}
        sizes: dict[str, int] = {}
        placed = []
        for leaf in leaves:
            dtype = np.dtype(leaf.dtype).name
            group = groups.setdefault(dtype, [])
            offset = sizes.get(dtype, 0)
            placed.append((list(groups).index(dtype), offset, tuple(leaf.shape), dtype))
            sizes[dtype] = offset + math.prod(leaf.shape)
            group.append(leaf)
        if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
            buffers = tuple(jax.ShapeDtypeStruct((sizes[dtype],), dtype) for dtype in groups)
        else:
            buffers = tuple(jnp.concatenate([jnp.ravel(leaf) for leaf in group])
                            for group in groups.values())
        return cls(buffers, Layout(treedef, tuple(placed)))

    def unpack(self) -> Any:
        """The original tree (inside a jitted program: slices of the traced buffers)."""
        if any(isinstance(buffer, jax.ShapeDtypeStruct) for buffer in self.buffers):
            leaves = [jax.ShapeDtypeStruct(shape, dtype)
                      for _, _, shape, dtype in self.layout.leaves]
            return jax.tree_util.tree_unflatten(self.layout.treedef, leaves)
        leaves = [jax.lax.slice_in_dim(self.buffers[index], offset,
                                       offset + math.prod(shape)).reshape(shape)
                  for index, offset, shape, _ in self.layout.leaves]
        return jax.tree_util.tree_unflatten(self.layout.treedef, leaves)

    def tree_flatten(self) -> tuple[tuple[jax.Array, ...], Layout]:
        return self.buffers, self.layout

    @classmethod
    def tree_unflatten(cls, layout: Layout, buffers: tuple[jax.Array, ...]
                       ) -> PackedVariables:
        return cls(buffers, layout)


def unpacked(variables: Any) -> Any:
    """The variables tree of either form (a jitted program may be called with both)."""
    return variables.unpack() if isinstance(variables, PackedVariables) else variables
