"""Encoder variants: who attends to whom, padding invariance, and memory-token init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax.models.decoder import TransformerDecoder
from ifc_jax.models.encoder import build_encoder
from ifc_jax.models.position import sine_position_encoding

VARIANTS = ("ifc", "no_comm", "full_thw", "decompose_thw")
C, HEADS, FFN = 16, 2, 32


def _encoder(variant, memory=3):
    return build_encoder(variant, num_layers=3, num_heads=HEADS, dim_feedforward=FFN,
                         dropout=0.0, num_memory_tokens=memory, dtype=jnp.float32, name=None)


@pytest.fixture(scope="module", params=VARIANTS)
def encoder_case(request):
    """(variant, encoder, variables, apply fn, inputs) on B=2 clips of T=3 frames of 3x4."""
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randn(2, 3, 12, C), jnp.float32)
    position = jnp.asarray(rng.randn(2, 3, 12, C), jnp.float32)
    mask = jnp.zeros((2, 3, 12), bool)
    encoder = _encoder(request.param)
    variables = encoder.init(jax.random.key(0), tokens, position, mask)
    apply = jax.jit(encoder.apply)
    return request.param, variables, apply, (tokens, position, mask)


def _changed(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) > 1e-4


def test_frames_communicate_only_when_the_variant_allows(encoder_case):
    variant, variables, apply, (tokens, position, mask) = encoder_case
    base = apply(variables, tokens, position, mask)
    perturbed = tokens.at[0, 2].add(1.0)  # change frame 2 of clip 0
    out = apply(variables, perturbed, position, mask)
    frame0_changed = _changed(out.frame_tokens[0, 0], base.frame_tokens[0, 0])
    assert frame0_changed == (variant != "no_comm")
    # Clips never see each other.
    np.testing.assert_array_equal(out.frame_tokens[1], base.frame_tokens[1])
    if variant == "ifc":
        assert out.memory_tokens.shape == (2, 3, 3, C)
        assert _changed(out.memory_tokens[0, 0], base.memory_tokens[0, 0])
        np.testing.assert_array_equal(out.memory_tokens[1], base.memory_tokens[1])
    else:
        assert out.memory_tokens is None


def test_no_comm_frame_output_is_exactly_independent_of_other_frames():
    rng = np.random.RandomState(1)
    tokens = jnp.asarray(rng.randn(1, 4, 6, C), jnp.float32)
    position = jnp.zeros_like(tokens)
    mask = jnp.zeros((1, 4, 6), bool)
    encoder = _encoder("no_comm")
    variables = encoder.init(jax.random.key(0), tokens, position, mask)
    clip = encoder.apply(variables, tokens, position, mask).frame_tokens
    single = encoder.apply(variables, tokens[:, 1:2], position[:, 1:2], mask[:, 1:2]).frame_tokens
    np.testing.assert_allclose(clip[:, 1:2], single, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_change_valid_outputs(variant):
    """A frame padded from 3x4 to 5x6 tokens gives the same encoder and decoder outputs."""
    rng = np.random.RandomState(2)
    frames, valid_h, valid_w, pad_h, pad_w = 2, 3, 4, 5, 6
    valid = rng.randn(1, frames, valid_h, valid_w, C)
    padded = rng.randn(1, frames, pad_h, pad_w, C) * 10  # junk in the padded region
    padded[:, :, :valid_h, :valid_w] = valid
    pad_mask = np.ones((1, frames, pad_h, pad_w), bool)
    pad_mask[:, :, :valid_h, :valid_w] = False

    def run(grid, grid_mask):
        h, w = grid_mask.shape[2:]
        mask = jnp.asarray(grid_mask)
        position = sine_position_encoding(mask, C)
        tokens = jnp.asarray(grid.reshape(1, frames, h * w, C), jnp.float32)
        flat_mask = mask.reshape(1, frames, h * w)
        flat_pos = position.reshape(1, frames, h * w, C)
        encoder = _encoder(variant)
        variables = encoder.init(jax.random.key(0), tokens, flat_pos, flat_mask)
        encoded = encoder.apply(variables, tokens, flat_pos, flat_mask)
        memory = encoded.frame_tokens.reshape(1, -1, C)
        memory_pos = flat_pos.reshape(1, -1, C)
        memory_mask = flat_mask.reshape(1, -1)
        if encoded.memory_tokens is not None:
            slots = encoded.memory_tokens.reshape(1, -1, C)
            memory = jnp.concatenate([memory, slots], axis=1)
            slot_pos = jnp.broadcast_to(encoded.memory_position, encoded.memory_tokens.shape)
            memory_pos = jnp.concatenate([memory_pos, slot_pos.reshape(1, -1, C)], axis=1)
            memory_mask = jnp.concatenate(
                [memory_mask, jnp.zeros((1, slots.shape[1]), bool)], axis=1)
        decoder = TransformerDecoder(num_layers=2, num_heads=HEADS, dim_feedforward=FFN,
                                     dropout=0.0)
        queries = jnp.asarray(np.random.RandomState(3).randn(5, C), jnp.float32)
        dec_vars = decoder.init(jax.random.key(1), queries, memory, memory_pos, memory_mask)
        decoded = decoder.apply(dec_vars, queries, memory, memory_pos, memory_mask)
        frame_grid = encoded.frame_tokens.reshape(1, frames, h, w, C)
        return frame_grid, encoded.memory_tokens, decoded

    ref_frames, ref_memory, ref_decoded = run(valid, np.zeros((1, frames, valid_h, valid_w),
                                                              bool))
    out_frames, out_memory, out_decoded = run(padded, pad_mask)
    np.testing.assert_allclose(out_frames[:, :, :valid_h, :valid_w], ref_frames, atol=2e-4)
    np.testing.assert_allclose(out_decoded, ref_decoded, atol=2e-4)
    if variant == "ifc":
        np.testing.assert_allclose(out_memory, ref_memory, atol=2e-4)


def test_memory_tokens_init_is_kaiming_fan_out():
    tokens = jnp.zeros((1, 2, 4, 256))
    encoder = _encoder("ifc", memory=8)
    params = jax.jit(encoder.init)(jax.random.key(0), tokens, tokens,
                                   jnp.zeros((1, 2, 4), bool))["params"]
    for name in ("memory_tokens", "memory_position"):
        values = np.asarray(params[name])
        assert values.shape == (8, 256)
        # kaiming_normal(fan_out, relu) on (M, C): std = sqrt(2 / M) = 0.5.
        assert abs(values.std() - 0.5) < 0.03
        assert abs(values.mean()) < 0.03
    assert not np.allclose(params["memory_tokens"], params["memory_position"])
