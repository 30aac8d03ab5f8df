"""Masks straight from stride-8 logits to RLEs (`RleUpsampler`) against full-size masks made
by an independent PyTorch-style bilinear resize (tests/numpy_reference.py) and encoded by
pycocotools."""

import numpy as np
import pycocotools.mask as mask_util
import pytest

from ifc_jax.inference.rle_upsample import RleUpsampler
from tests import numpy_reference as ref


def reference(logits: np.ndarray, height: int, width: int) -> tuple[list[dict], np.ndarray]:
    """pycocotools RLEs of torch_bilinear(logits) > 0 and the resized values (n, H, W)."""
    values = np.stack([ref.torch_bilinear(x.astype(np.float64), height, width) for x in logits])
    encoded = mask_util.encode(np.asfortranarray((values > 0).transpose(1, 2, 0), np.uint8))
    return [{"size": [height, width], "counts": r["counts"].decode()} for r in encoded], values


def assert_matches_reference(logits: np.ndarray, height: int, width: int) -> None:
    got = RleUpsampler(logits.shape[1:], (height, width))(logits)
    expected, values = reference(logits, height, width)
    for index, (rle, want) in enumerate(zip(got, expected, strict=True)):
        if rle != want:  # only a pixel whose value is float noise away from 0 may differ
            decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            differ = decoded.astype(bool) != (values[index] > 0)
            assert np.abs(values[index][differ]).max() < 1e-9, (logits.shape, height, width)


@pytest.mark.parametrize("dense", [False, True], ids=["outline", "dense"])
@pytest.mark.parametrize("seed", range(6))
def test_random_grids_and_sizes_match_full_size_masks(seed, dense, monkeypatch):
    monkeypatch.setattr(RleUpsampler, "choose_dense", lambda self, mixed: dense)
    rng = np.random.default_rng(seed)
    for _ in range(25):
        grid_h, grid_w = rng.integers(1, 10, 2)
        height, width = rng.integers(1, 70, 2)  # up- and downsampling, one-pixel sides
        logits = rng.normal(size=(int(rng.integers(1, 4)), grid_h, grid_w)).astype(np.float32)
        assert_matches_reference(logits, int(height), int(width))


@pytest.mark.parametrize("dense", [False, True], ids=["outline", "dense"])
def test_uniform_masks_give_pycocotools_canonical_counts(dense, monkeypatch):
    monkeypatch.setattr(RleUpsampler, "choose_dense", lambda self, mixed: dense)
    up = RleUpsampler((3, 4), (7, 9))
    empty, full, half = up(np.stack([-np.ones((3, 4)), np.ones((3, 4)),
                                     np.r_[[[1.0] * 4], [[-1.0] * 4], [[-1.0] * 4]]]))
    assert empty == {"size": [7, 9], "counts": mask_util.encode(
        np.zeros((7, 9, 1), np.uint8, order="F"))[0]["counts"].decode()}
    assert mask_util.area({"size": [7, 9], "counts": full["counts"].encode()}) == 63
    assert 0 < mask_util.area({"size": [7, 9], "counts": half["counts"].encode()}) < 63
    assert up(np.zeros((0, 3, 4))) == []
    with pytest.raises(ValueError, match="expected"):
        up(np.zeros((1, 4, 3)))


def blobs(count: int, grid: tuple[int, int], seed: int, noise: float) -> np.ndarray:
    """Object-like logits: an ellipse per mask (positive inside) plus noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:grid[0], 0:grid[1]]
    out = []
    for _ in range(count):
        cy, cx = rng.uniform(0, grid[0]), rng.uniform(0, grid[1])
        ry, rx = rng.uniform(2, grid[0] / 2), rng.uniform(2, grid[1] / 2)
        out.append(6 * (1 - ((rows - cy) / ry) ** 2 - ((cols - cx) / rx) ** 2).clip(-3, None)
                   + rng.normal(0, noise, grid))
    return np.stack(out).astype(np.float32)


def test_outline_and_dense_paths_agree_at_720p(monkeypatch):
    """Smooth masks take the outline path, pure noise the dense path; forcing either path
    on either input gives the same RLEs, and both equal the full-size reference."""
    smooth, noisy = blobs(3, (45, 80), seed=1, noise=0.3), blobs(3, (45, 80), seed=2, noise=8)
    up = RleUpsampler((45, 80), (720, 1280))
    assert not up.choose_dense(up._outline_cells(smooth.astype(np.float64)))
    static = np.random.default_rng(3).normal(size=(3, 45, 80))  # a sign change in most cells
    assert up.choose_dense(up._outline_cells(static))
    for logits in (smooth, noisy):
        assert_matches_reference(logits, 720, 1280)
        outputs = []
        for dense in (False, True):
            monkeypatch.setattr(RleUpsampler, "choose_dense", lambda self, mixed, d=dense: d)
            outputs.append(up(logits))
        assert outputs[0] == outputs[1]
