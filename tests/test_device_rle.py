"""Run boundaries found on the device (`DeviceRleEncoder`) against full-size masks made by an
independent PyTorch-style bilinear resize (tests/numpy_reference.py) and encoded by
pycocotools, and `config.inference.mask_rle`'s choice between it and the host path (the
predictor with either: tests/test_inference.py)."""

import jax
import numpy as np
import pycocotools.mask as mask_util
import pytest

from ifc_jax import config as config_module
from ifc_jax.inference import device_rle
from ifc_jax.inference import predictor as predictor_module
from ifc_jax.inference.device_rle import DeviceRleEncoder
from ifc_jax.inference.predictor import mask_encoder
from ifc_jax.inference.rle_upsample import RleUpsampler
from tests import numpy_reference as ref
from tests.test_rle_upsample import blobs, reference


def assert_matches_reference(logits: np.ndarray, height: int, width: int,
                             encoder: object | None = None) -> int:
    """The RLEs of `encoder` (default: the device's) equal pycocotools' strings of the
    reference masks, except at pixels whose float64 value is within float32 rounding of 0;
    returns how many pixels differ."""
    encoder = encoder or DeviceRleEncoder(logits.shape[1:], (height, width))
    got = encoder(logits)
    expected, values = reference(logits, height, width)
    assert len(got) == len(expected)
    differing = 0
    for index, (rle, want) in enumerate(zip(got, expected, strict=True)):
        assert rle["size"] == [height, width]
        if rle != want:
            decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            differ = decoded.astype(bool) != (values[index] > 0)
            assert differ.any(), "same mask, non-canonical string"
            bound = 1e-5 * max(1.0, float(np.abs(logits[index]).max()))
            assert np.abs(values[index][differ]).max() < bound, (logits.shape, height, width)
            differing += int(differ.sum())
    return differing


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("compact_on_host", [True, False], ids=["host-compaction", "pack"])
def test_random_grids_and_upsampled_sizes_match_full_size_masks(seed, compact_on_host):
    rng = np.random.default_rng(seed)
    differing = 0
    for _ in range(25):
        grid_h, grid_w = (int(v) for v in rng.integers(1, 10, 2))
        height = int(rng.integers(grid_h, 70))  # upsampling, equal sizes, one-pixel sides
        width = int(rng.integers(grid_w, 70))
        logits = rng.normal(size=(int(rng.integers(1, 20)), grid_h, grid_w))
        encoder = DeviceRleEncoder((grid_h, grid_w), (height, width),
                                   compact_on_host=compact_on_host)
        differing += assert_matches_reference(logits.astype(np.float32), height, width, encoder)
    assert differing <= 2  # float32 rounding moves a pixel rarely, never by more than that


def test_batches_are_split_into_few_sizes_with_little_padding():
    for count in range(0, 3 * device_rle.MAX_BATCH):
        sizes = device_rle.batch_sizes(count)
        assert count <= sum(sizes) < count + device_rle.MIN_BATCH
        assert all(size & (size - 1) == 0 and device_rle.MIN_BATCH <= size
                   <= device_rle.MAX_BATCH for size in sizes)
        assert sizes == sorted(sizes, reverse=True)
        assert not count or sum(sizes[:-1]) < count  # the last call holds a real mask


def hybrid_with_calls(grid: tuple[int, int], output: tuple[int, int]
                      ) -> tuple[RleUpsampler, list[int]]:
    """`auto`'s CPU encoder (the host's, handing dense batches to the device's) and the list
    of the batch sizes the device encoder is called with."""
    calls: list[int] = []
    device = DeviceRleEncoder(grid, output)

    def dense(logits: np.ndarray) -> list[dict]:
        calls.append(len(logits))
        return device(logits)

    return RleUpsampler(grid, output, dense_encoder=dense), calls


def test_noisy_batches_take_the_device_encoder_and_match_the_reference():
    """`auto` on a CPU: the host's outline path for object masks, the device's program
    (compacted on the host) for batches whose outline is most of the grid; on a GPU or TPU
    the device's program for every batch."""
    hybrid, calls = hybrid_with_calls((16, 28), (128, 224))
    noisy = np.random.default_rng(3).normal(size=(12, 16, 28)).astype(np.float32)
    assert assert_matches_reference(noisy, 128, 224, hybrid) <= 2
    assert calls == [12]
    objects = blobs(4, (16, 28), seed=4, noise=0.3)
    assert hybrid(objects) == RleUpsampler((16, 28), (128, 224))(objects)
    assert calls == [12]  # the outline path: the device encoder not called
    default = jax.devices()[0]
    chosen = mask_encoder((16, 28), (128, 224), "auto", default)
    if default.platform == "cpu":
        assert isinstance(chosen.dense_encoder, DeviceRleEncoder)
        assert chosen.dense_encoder.compact_on_host
    else:
        assert isinstance(chosen, DeviceRleEncoder) and chosen.device == default
    assert mask_encoder((16, 28), (128, 224), "host").dense_encoder is None


def test_at_720p_the_choice_weighs_the_device_encoders_own_cost():
    """Noisy masks at 720p: the outline path would cost several times the device program, so
    `auto`'s hybrid hands them to it, though the numpy dense path (the choice without a
    dense encoder) would cost more than the outline; object masks stay on the outline."""
    hybrid, calls = hybrid_with_calls((45, 80), (720, 1280))
    noisy = blobs(3, (45, 80), seed=5, noise=8)
    mixed = hybrid._outline_cells(noisy.astype(np.float64))
    assert 0.2 < mixed.mean() < 0.4  # a quarter of the cells: far from pure noise
    assert hybrid.choose_dense(mixed)
    assert not RleUpsampler((45, 80), (720, 1280)).choose_dense(mixed)
    assert_matches_reference(noisy, 720, 1280, hybrid)
    assert calls == [3]
    objects = blobs(3, (45, 80), seed=6, noise=0.3)
    assert hybrid(objects) == RleUpsampler((45, 80), (720, 1280))(objects)
    assert calls == [3]  # the outline path: the device encoder not called


def test_object_masks_at_720p_match_the_reference_and_the_host_path():
    logits = np.concatenate([blobs(3, (45, 80), seed=1, noise=0.3),
                             blobs(2, (45, 80), seed=2, noise=8)])
    assert assert_matches_reference(logits, 720, 1280) == 0
    assert DeviceRleEncoder((45, 80), (720, 1280))(logits) == \
        RleUpsampler((45, 80), (720, 1280))(logits)


def test_uniform_masks_empty_batches_and_batches_past_the_largest_call():
    encoder = DeviceRleEncoder((3, 4), (7, 9))
    half = np.r_[[[1.0] * 4], [[-1.0] * 4], [[-1.0] * 4]]
    empty, full, top = encoder(np.stack([-np.ones((3, 4)), np.ones((3, 4)), half]))
    assert empty == {"size": [7, 9], "counts": mask_util.encode(
        np.zeros((7, 9, 1), np.uint8, order="F"))[0]["counts"].decode()}
    assert mask_util.area({"size": [7, 9], "counts": full["counts"].encode()}) == 63
    expected = ref.torch_bilinear(half, 7, 9) > 0
    assert (mask_util.decode({"size": [7, 9], "counts": top["counts"].encode()})
            == expected).all()
    assert encoder(np.zeros((0, 3, 4))) == []
    many = np.random.default_rng(0).normal(size=(device_rle.MAX_BATCH + 3, 3, 4))
    assert encoder(many) == RleUpsampler((3, 4), (7, 9))(many)
    with pytest.raises(ValueError, match="expected"):
        encoder(np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match="smaller than the grid"):
        DeviceRleEncoder((3, 4), (2, 9))


def test_mask_rle_setting_picks_the_encoder():
    assert config_module.MASK_RLE_PATHS == predictor_module.MASK_RLE_PATHS
    default = jax.devices()[0]
    auto = mask_encoder((5, 7), (40, 56), "auto", default)
    # The host's encoder on a CPU, the device's on a GPU or TPU.
    assert isinstance(auto, RleUpsampler if default.platform == "cpu" else DeviceRleEncoder)
    assert isinstance(mask_encoder((5, 7), (40, 56), "host"), RleUpsampler)
    chosen = mask_encoder((5, 7), (40, 56), "device", default)
    assert isinstance(chosen, DeviceRleEncoder) and chosen.device == default
    assert isinstance(mask_encoder((5, 7), (4, 56), "device"), RleUpsampler)  # downsampling
    with pytest.raises(ValueError, match="mask_rle"):
        mask_encoder((5, 7), (40, 56), "gpu")

