"""FLOPs counter: the paper's 16 table cells, closed-form formulas elsewhere, the primitives."""

import jax
import jax.numpy as jnp
import pytest

from ifc_jax.flops import PAPER_ENCODER_GFLOPS, count_flops, encoder_flops

C, F, LAYERS = 256, 2048, 3
PER_TOKEN = 4 * C * C + 2 * C * F + 2 * 5 * C  # projections + FFN + two LayerNorms


def _formula(variant, height, width, frames, memory):
    """The closed forms of docs/flops.md#closed-forms, in FLOPs (multiply-adds)."""
    n = -(-height // 32) * -(-width // 32)
    if variant == "no_comm":
        return LAYERS * (frames * n * PER_TOKEN + frames * 2 * n * n * C)
    if variant == "full_thw":
        return LAYERS * (frames * n * PER_TOKEN + 2 * (frames * n) ** 2 * C)
    if variant == "decompose_thw":
        spatial = _formula("no_comm", height, width, frames, memory)
        return spatial + (LAYERS - 1) * (frames * n * PER_TOKEN + n * 2 * frames**2 * C)
    s = n + memory
    return LAYERS * (frames * s * PER_TOKEN + frames * 2 * s * s * C) + LAYERS * (
        memory * frames * PER_TOKEN + memory * 2 * frames**2 * C)


CELLS = [(v, h, w, t, g) for v, cells in PAPER_ENCODER_GFLOPS.items()
         for (h, w, t), g in cells.items()]


@pytest.mark.parametrize("variant,height,width,frames,paper", CELLS)
def test_paper_table_cell_within_half_a_percent(variant, height, width, frames, paper):
    ours = sum(encoder_flops(variant, height, width, frames, 8).values()) / 1e9
    assert abs(ours - paper) / paper < 0.005


@pytest.mark.parametrize("variant", ["no_comm", "full_thw", "decompose_thw", "ifc"])
@pytest.mark.parametrize("height,width,frames,memory", [
    (480, 864, 7, 4), (200, 300, 3, 16), (33, 65, 1, 1), (720, 1280, 36, 8)])
def test_other_settings_equal_the_closed_form(variant, height, width, frames, memory):
    counted = sum(encoder_flops(variant, height, width, frames, memory).values())
    assert counted == _formula(variant, height, width, frames, memory)


def test_layer_norm_counted_at_five_per_element():
    counts = encoder_flops("no_comm", 360, 640, 5, 0)
    assert counts["layer_norm"] == LAYERS * 2 * 5 * (5 * 240) * C


def test_primitive_rules():
    def fn(x, w, img, kernel):
        conv = jax.lax.conv_general_dilated(img, kernel, (2, 2), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.einsum("bik,kj->bij", x, w), conv, jnp.exp(x) + 1

    shapes = (jax.ShapeDtypeStruct((3, 4, 5), jnp.float32),
              jax.ShapeDtypeStruct((5, 6), jnp.float32),
              jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32),
              jax.ShapeDtypeStruct((3, 3, 3, 7), jnp.float32))
    counts = count_flops(fn, *shapes)
    assert counts["matmul"] == 3 * 4 * 5 * 6
    assert counts["conv"] == (2 * 4 * 4 * 7) * (3 * 3 * 3)
    assert set(counts) == {"matmul", "conv"}  # exp and add are free


def test_depthwise_conv_counted_as_the_grouped_convolution_it_computes():
    from ifc_jax.models.layers import depthwise_conv

    def grouped(img, kernel, bias):
        return jax.lax.conv_general_dilated(img, kernel, (1, 1), ((2, 2), (2, 2)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=8) + bias

    shapes = (jax.ShapeDtypeStruct((2, 6, 7, 8), jnp.float32),
              jax.ShapeDtypeStruct((5, 5, 1, 8), jnp.float32),
              jax.ShapeDtypeStruct((8,), jnp.float32))
    ours = count_flops(depthwise_conv, *shapes)
    assert ours == count_flops(grouped, *shapes)
    assert ours["conv"] == (2 * 6 * 7 * 8) * 25
