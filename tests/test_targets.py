"""Stride-4 targets computed on the host (uint8 counts) are, once on the device, bit for bit the
soft targets the train step used to compute there from the full-resolution masks."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifc_jax.data import clips
from ifc_jax.data import masks as mask_codec
from ifc_jax.data.ytvis import Track, Video, load_ytvis
from ifc_jax.train.targets import resize_last_two, soft_targets
from tests import numpy_reference as ref
from tests.data_helpers import clip_settings, frame_pattern, make_small_toy


def downsampled_on_device(masks: jax.Array) -> jax.Array:
    """train/targets.py's `stride4_targets` before the host shipped counts, verbatim: what the
    train step computed from `masks` bool (..., H, W) on the device."""
    height, width = masks.shape[-2:]
    if height % 4 == 0 and width % 4 == 0:
        blocks = masks.reshape(*masks.shape[:-2], height // 4, 4, width // 4, 4)
        inner = blocks[..., 1:3, :, 1:3].astype(jnp.float32)
        return jnp.sum(inner, axis=(-3, -1)) * 0.25
    return resize_last_two(masks.astype(jnp.float32), -(-height // 4), -(-width // 4))


def assert_same_targets(masks: np.ndarray, counts: np.ndarray) -> None:
    """counts, made soft on the device, equal the device's and PyTorch's downsampling of masks."""
    height, width = masks.shape[-2:]
    host = np.asarray(jax.jit(soft_targets)(counts))
    assert host.dtype == np.float32
    np.testing.assert_array_equal(host, np.asarray(jax.jit(downsampled_on_device)(masks)))
    # Every value is a multiple of 1/4: the float64 reference is exact, so is its float32 cast.
    torch = ref.torch_bilinear(masks.astype(np.float64), height // 4, width // 4)
    np.testing.assert_array_equal(host, torch.astype(np.float32))


def test_hand_computed_blocks():
    masks = np.zeros((8, 8), bool)
    masks[0, 0] = masks[3, 3] = masks[0, 3] = True  # outer ring of block (0, 0): weight 0
    masks[1, 1] = masks[2, 2] = True                # 2 of its centre 2 x 2
    masks[0:4, 4:8] = True                          # block (0, 1) full
    masks[4, 4:8] = masks[7, 0:4] = True            # outer rows of blocks (1, 0) and (1, 1)
    masks[5, 6] = True                              # 1 centre pixel of block (1, 1)
    counts = clips.stride4_counts(masks)
    assert counts.dtype == np.uint8
    np.testing.assert_array_equal(counts, [[2, 4], [0, 1]])
    np.testing.assert_array_equal(soft_targets(jnp.asarray(counts)), [[0.5, 1.0], [0.0, 0.25]])
    assert_same_targets(masks, counts)


@pytest.mark.parametrize("shape", [(4, 4), (8, 12), (3, 2, 16, 20), (2, 5, 64, 96),
                                   (1, 3, 36, 4)])
def test_random_masks_of_every_density(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.1, 0.5, 0.9, 1.0):
        masks = rng.random(shape) < density
        assert_same_targets(masks, clips.stride4_counts(masks))


def test_sizes_off_the_grid_are_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        clips.stride4_counts(np.zeros((2, 8, 10), bool))


def padded_masks(video, plan: clips.ClipPlan, settings: clips.ClipSettings) -> np.ndarray:
    """bool (N, T, H, W): the full-resolution masks build_train_clip used to ship."""
    out_h, out_w = clips.train_clip_size(video.height, video.width, plan.short_side, settings)
    masks = np.zeros((settings.max_instances, len(plan.frame_indices), settings.pad_height,
                      settings.pad_width), bool)
    for slot, (_, track_masks) in enumerate(
            clips.clip_targets(video, plan, (out_h, out_w), settings.max_instances)):
        masks[slot, :, :out_h, :out_w] = track_masks
    return masks


def test_clips_of_the_toy_dataset(tmp_path):
    """Real clips: decoded RLEs, resized to odd sizes, flipped, padded, invalid slots."""
    root = make_small_toy(str(tmp_path / "toy"), height=50, width=70)
    dataset = load_ytvis(os.path.join(root, "train.json"),
                         os.path.join(root, "train", "JPEGImages"))
    settings = clip_settings(num_frames=3, sampling_frame_range=3, short_sides=(23, 37, 50),
                             max_size=100, flip_prob=0.5, pad_height=64, pad_width=96,
                             max_instances=4)
    rng = np.random.default_rng(0)
    sizes, instances = set(), 0
    for _ in range(3):
        for video in dataset.videos:
            plan = clips.plan_clip(rng, video.length, settings)
            clip = clips.build_train_clip(video, plan, settings)
            masks = padded_masks(video, plan, settings)
            assert clip["target_counts"].shape == (4, 3, 16, 24)
            assert_same_targets(masks, clip["target_counts"])
            sizes.add(tuple(clip["image_size"].tolist()))
            instances += int(clip["instance_valid"].sum())
    assert len(sizes) == 3 and any(h % 4 and w % 4 for h, w in sizes)  # off the 4-pixel grid
    assert instances > 10


def random_mask_video(rng: np.random.Generator, height: int, width: int, length: int,
                      tracks: int) -> Video:
    """A video whose tracks are noise masks (a few frames absent), the worst case for targets."""
    made = []
    for track_id in range(1, tracks + 1):
        density = rng.uniform(0.05, 0.95)
        segmentations = tuple(
            None if rng.random() < 0.2
            else mask_codec.encode_mask(rng.random((height, width)) < density, "rle")
            for _ in range(length))
        made.append(Track(track_id=track_id, category_id=1, label=0, iscrowd=False,
                          segmentations=segmentations))
    frames = np.stack([frame_pattern(height, width, t) for t in range(length)])
    return Video(video_id=1, height=height, width=width,
                 file_names=tuple(f"v/{t:05d}.jpg" for t in range(length)), frame_paths=(),
                 tracks=tuple(made), frames=frames)


@pytest.mark.parametrize("height, width, short_side, flip", [
    (21, 33, 21, False),   # no resize: 21 x 33, off the grid both ways
    (21, 33, 15, True),    # 15 x 24 (23.57 -> 24)
    (40, 30, 29, True),    # portrait 39 x 29 (38.67 -> 39)
    (90, 130, 64, False),  # 64 x 92, fills the pad height
])
def test_clips_of_random_masks(height, width, short_side, flip):
    rng = np.random.default_rng(height * width + short_side)
    video = random_mask_video(rng, height, width, 6, tracks=5)
    settings = clip_settings(num_frames=4, short_sides=(short_side,), max_size=200,
                             pad_height=64, pad_width=96, max_instances=3)
    plan = clips.ClipPlan(np.array([0, 2, 2, 5]), 2, short_side, flip)
    clip = clips.build_train_clip(video, plan, settings)
    masks = padded_masks(video, plan, settings)
    assert clip["instance_valid"].all() and 0 < masks.mean() < 1  # 3 of 5 tracks kept
    assert_same_targets(masks, clip["target_counts"])
