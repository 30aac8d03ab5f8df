"""PackedVariables: a variables tree as one buffer per dtype, unpacked inside jitted programs."""

import jax
import jax.numpy as jnp
import numpy as np

from ifc_jax.inference.packed_variables import PackedVariables, unpacked


def _tree(first_shape=(2, 3)):
    rng = np.random.default_rng(0)
    return {"params": {"a": jnp.asarray(rng.standard_normal(first_shape), jnp.float32),
                       "b": jnp.asarray(rng.standard_normal(6), jnp.bfloat16),
                       "c": jnp.asarray(rng.standard_normal((1, 4, 1)), jnp.float32),
                       "empty": jnp.zeros((0, 5), jnp.float32)},
            "batch_stats": {"count": jnp.asarray(7, jnp.int32),
                            "mean": jnp.asarray(rng.standard_normal(3), jnp.bfloat16)}}


def _assert_same_tree(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for left, right in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert left.dtype == right.dtype and left.shape == right.shape
        np.testing.assert_array_equal(np.asarray(left, np.float64), np.asarray(right, np.float64))


def test_one_buffer_per_dtype_and_unpacking_gives_the_tree_back_bit_for_bit():
    tree = _tree()
    packed = PackedVariables.pack(tree)
    assert sorted(str(b.dtype) for b in packed.buffers) == ["bfloat16", "float32", "int32"]
    assert len(jax.tree.leaves(packed)) == 3  # what a jitted call receives
    _assert_same_tree(packed.unpack(), tree)
    _assert_same_tree(jax.jit(lambda p: p.unpack())(packed), tree)
    assert unpacked(tree) is tree


def test_jitted_program_reads_each_layout_as_its_own_compiled_program():
    """Two trees of equal buffer sizes but another leaf shape must not share a program."""
    program = jax.jit(lambda v: unpacked(v)["params"]["a"] * 2)
    wide, tall = _tree((2, 3)), _tree((3, 2))
    for tree in (wide, tall):
        got = program(PackedVariables.pack(tree))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(tree["params"]["a"]) * 2)
    assert program._cache_size() == 2
    program(PackedVariables.pack(_tree((2, 3))))  # same layout, new values: no new program
    assert program._cache_size() == 2


def test_device_put_keeps_the_layout():
    packed = PackedVariables.pack(_tree())
    moved = jax.device_put(packed, jax.devices()[-1])
    assert isinstance(moved, PackedVariables) and moved.layout == packed.layout
    assert all(buffer.devices() == {jax.devices()[-1]} for buffer in moved.buffers)
    _assert_same_tree(moved.unpack(), _tree())


def test_shapes_alone_pack_and_trace_without_arrays():
    """FLOP counting builds the predictor on `jax.ShapeDtypeStruct`s."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _tree())
    packed = PackedVariables.pack(shapes)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), packed.unpack()) == jax.tree.map(
        lambda x: (x.shape, x.dtype), shapes)
    out = jax.eval_shape(lambda v: unpacked(v)["params"]["c"].sum(0), packed)
    assert out.shape == (4, 1) and out.dtype == jnp.float32


def test_numpy_and_python_leaves_pack_as_jit_would_take_them():
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "scale": 0.5, "steps": 3}
    got = PackedVariables.pack(tree).unpack()
    assert got["w"].dtype == jnp.float32 and got["w"].shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(got["w"]), tree["w"])
    assert float(got["scale"]) == 0.5 and int(got["steps"]) == 3
