"""Training clips and evaluation videos from a `YtvisDataset` (numpy + PIL, no TensorFlow).

Training clip recipe (docs/training.md#clips and #targets):
  * frames: a reference frame uniform in [0, L); the other T-1 drawn WITH replacement from
    [ref - range, ref + range] ∩ [0, L) minus ref; all T sorted. With L == 1 the reference
    is repeated T times.
  * optionally (`crop_range`, COCO pre-training), one crop per clip before the resize, as
    detectron2's RandomCrop "absolute_range": height and width each uniform in
    [min(side, low), min(side, high)], the box uniform over the positions that fit.
  * one short side per clip from `short_sides`, long side capped at `max_size` (detectron2
    ResizeShortestEdge, `int(x + 0.5)` rounding); frames bilinear, masks nearest neighbour.
  * static padding: the resized clip is placed top-left in a (pad_height, pad_width) canvas.
    If it does not fit, it is scaled down further (aspect kept) until it does; with the paper
    configs this only happens to portrait or wider-than-16:9 videos.
  * one horizontal flip per clip with probability `flip_prob` (before padding, so the padding
    stays at the bottom/right).
  * targets: the instances are the non-crowd tracks present (non-null) in at least one sampled
    frame; a mask that becomes empty after the resize counts as absent in that frame; tracks
    absent in all T frames are dropped. Crowd tracks (iscrowd=1) are left out of the targets
    entirely (the loss has no ignore regions). If more than `max_instances` remain, the ones
    with the most visible pixels in the clip are kept (in annotation order).
  * stride-4 targets: each instance's padded masks are reduced here, on the host, to the counts
    the train step's soft targets are made of (`stride4_counts`); the full-resolution masks
    never leave this module (16x fewer bytes to ship and to hold in the prefetch buffers).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ifc_jax.data import frames as frame_ops
from ifc_jax.data.masks import is_absent
from ifc_jax.data.ytvis import Track, Video
from ifc_jax.io import UserError

TARGET_STRIDE = 4  # the targets' grid: stride 4 of the padded clip


@dataclasses.dataclass(frozen=True)
class ClipSettings:
    """How training clips are sampled, augmented and padded: `config.data`'s training keys
    (validated with the config; pad sizes are multiples of 32)."""

    num_frames: int
    sampling_frame_range: int
    short_sides: tuple[int, ...]
    max_size: int
    flip_prob: float
    pad_height: int
    pad_width: int
    max_instances: int
    crop_range: tuple[int, ...] = ()  # (low, high) of the random crop; () = no crop

    @classmethod
    def from_config(cls, data_config: Any) -> ClipSettings:
        return cls(num_frames=int(data_config.num_frames),
                   sampling_frame_range=int(data_config.sampling_frame_range),
                   short_sides=tuple(int(s) for s in data_config.train_short_sides),
                   max_size=int(data_config.train_max_size),
                   flip_prob=float(data_config.flip_prob),
                   pad_height=int(data_config.pad_height),
                   pad_width=int(data_config.pad_width),
                   max_instances=int(data_config.max_instances),
                   crop_range=tuple(int(v) for v in data_config.train_crop))


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """The random choices of one clip, made before any pixel is touched."""

    frame_indices: np.ndarray  # int (T,), sorted
    reference_frame: int
    short_side: int
    flip: bool
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) in the frame


def sample_frame_indices(rng: np.random.Generator, length: int, num_frames: int,
                         frame_range: int) -> tuple[np.ndarray, int]:
    """Returns (sorted frame indices int64 (num_frames,), reference frame).

    The sampling rule: docs/training.md#clips.
    """
    reference = int(rng.integers(length))
    low, high = max(0, reference - frame_range), min(length, reference + frame_range + 1)
    candidates = np.concatenate([np.arange(low, reference), np.arange(reference + 1, high)])
    if candidates.size == 0:
        others = np.full(num_frames - 1, reference, dtype=np.int64)
    else:
        others = rng.choice(candidates, size=num_frames - 1, replace=True)
    indices = np.sort(np.concatenate([[reference], others]).astype(np.int64))
    return indices, reference


def sample_crop(rng: np.random.Generator, height: int, width: int, low: int,
                high: int) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of an "absolute_range" random crop: each side
    uniform in [min(side, low), min(side, high)], then the position uniform."""
    crop_h = int(rng.integers(min(height, low), min(height, high) + 1))
    crop_w = int(rng.integers(min(width, low), min(width, high) + 1))
    top = int(rng.integers(height - crop_h + 1))
    left = int(rng.integers(width - crop_w + 1))
    return top, left, crop_h, crop_w


def plan_clip(rng: np.random.Generator, length: int, settings: ClipSettings,
              frame_size: tuple[int, int] | None = None) -> ClipPlan:
    """Draws frames, crop (only with `settings.crop_range`; needs the video's `frame_size`
    (height, width)), short side and flip for one clip, in that order, from `rng`."""
    indices, reference = sample_frame_indices(rng, length, settings.num_frames,
                                              settings.sampling_frame_range)
    crop = None
    if settings.crop_range:
        if frame_size is None:
            raise ValueError("a clip with a random crop needs the frame size")
        crop = sample_crop(rng, *frame_size, *settings.crop_range)
    short_side = settings.short_sides[int(rng.integers(len(settings.short_sides)))]
    flip = bool(rng.random() < settings.flip_prob)
    return ClipPlan(indices, reference, short_side, flip, crop)


def _crop(array: np.ndarray, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    """The (top, left, height, width) box of a (H, W, ...) array; the array without a crop."""
    if crop is None:
        return array
    top, left, height, width = crop
    return array[top:top + height, left:left + width]


def shortest_edge_size(height: int, width: int, short_side: int,
                       max_size: int) -> tuple[int, int]:
    """(new_height, new_width) of detectron2's ResizeShortestEdge.get_output_shape."""
    scale = short_side / min(height, width)
    if height < width:
        new_height, new_width = float(short_side), scale * width
    else:
        new_height, new_width = scale * height, float(short_side)
    if max(new_height, new_width) > max_size:
        cap = max_size / max(new_height, new_width)
        new_height, new_width = new_height * cap, new_width * cap
    return int(new_height + 0.5), int(new_width + 0.5)


def fit_in_box(height: int, width: int, box_height: int, box_width: int) -> tuple[int, int]:
    """Scales (height, width) down, aspect kept, until it fits the box; unchanged if it fits."""
    if height <= box_height and width <= box_width:
        return height, width
    scale = min(box_height / height, box_width / width)
    return (max(1, min(box_height, int(height * scale + 0.5))),
            max(1, min(box_width, int(width * scale + 0.5))))


def train_clip_size(height: int, width: int, short_side: int,
                    settings: ClipSettings) -> tuple[int, int]:
    """Resized (h, w) of a clip before padding: shortest-edge rule, then fit in the pad box."""
    size = shortest_edge_size(height, width, short_side, settings.max_size)
    return fit_in_box(*size, settings.pad_height, settings.pad_width)


def _decode(track: Track, video: Video, frame: int, source: str) -> np.ndarray | None:
    """The track's mask in `frame`; a segmentation pycocotools cannot decode is a UserError."""
    try:
        return track.mask(frame, video.height, video.width)
    except (ValueError, TypeError, OverflowError) as err:
        raise UserError(f"{source or 'annotations'}: annotation {track.track_id} (video "
                        f"{video.video_id} ({video.name})), frame {frame} "
                        f"({video.file_names[frame]}): cannot decode its segmentation "
                        f"({err})") from None


def _track_masks(track: Track, video: Video, plan: ClipPlan, out_size: tuple,
                 source: str = "") -> np.ndarray:
    """Cropped, resized (and flipped) bool masks (T, h, w) of a track on the sampled frames."""
    decoded: dict[int, np.ndarray] = {}
    frame_indices, flip = plan.frame_indices, plan.flip
    result = np.zeros((len(frame_indices), *out_size), dtype=bool)
    for t, frame in enumerate(frame_indices.tolist()):
        if frame not in decoded:
            mask = _decode(track, video, frame, source)
            decoded[frame] = (None if mask is None
                              else frame_ops.resize_mask(_crop(mask, plan.crop), *out_size))
        if decoded[frame] is not None:
            result[t] = decoded[frame][:, ::-1] if flip else decoded[frame]
    return result


def clip_targets(video: Video, plan: ClipPlan, out_size: tuple[int, int],
                 max_instances: int, source: str = "") -> list[tuple[Track, np.ndarray]]:
    """(track, masks (T, h, w)) of the instances of a clip, per the module docstring rules."""
    instances = []
    for track in video.tracks:
        if track.iscrowd:
            continue
        if all(is_absent(track.segmentations[f]) for f in plan.frame_indices.tolist()):
            continue
        masks = _track_masks(track, video, plan, out_size, source)
        if masks.any():
            instances.append((track, masks))
    if len(instances) > max_instances:
        areas = np.array([m.sum() for _, m in instances])
        keep = np.sort(np.argsort(-areas, kind="stable")[:max_instances])
        instances = [instances[i] for i in keep]
    return instances


def stride4_counts(masks: np.ndarray) -> np.ndarray:
    """(..., H, W) bool masks, H and W multiples of 4 -> (..., H/4, W/4) uint8 counts 0..4.

    The stride-4 soft target (docs/training.md#targets) is a bilinear downsampling by 4 with
    half-pixel centres and no antialias: target pixel (i, j) samples the point
    (4i + 1.5, 4j + 1.5), which is the mean of the 2 x 2 pixels at rows 4i+1, 4i+2 and columns
    4j+1, 4j+2 (weights 1/2 each way; the outer 12 pixels of the 4 x 4 block have weight 0).
    This returns how many of those 4 pixels are set; the train step turns it into the float32
    target count / 4 (`train.targets.soft_targets`), exactly, as every value is a multiple of
    1/4. One byte per target pixel is the smallest exact form that needs no unpacking.
    """
    height, width = masks.shape[-2:]
    if height % TARGET_STRIDE or width % TARGET_STRIDE:
        raise ValueError(f"masks of {height}x{width}: the stride-4 targets need sizes that are "
                         f"multiples of {TARGET_STRIDE} (the padded training size is)")
    # Four strided views, not a reshape and sum: no (..., H/4, 4, W/4, 4) copy of the masks.
    counts = masks[..., 1::TARGET_STRIDE, 1::TARGET_STRIDE].astype(np.uint8)
    for rows, cols in ((1, 2), (2, 1), (2, 2)):
        counts += masks[..., rows::TARGET_STRIDE, cols::TARGET_STRIDE]
    return counts


def build_train_clip(video: Video, plan: ClipPlan, settings: ClipSettings,
                     source: str = "") -> dict[str, np.ndarray]:
    """One training clip as fixed-shape numpy arrays (N = max_instances, T = num_frames).

    Returns:
      frames        uint8 (T, H, W, 3) RGB, zero padding; H, W = pad_height, pad_width
      padding_mask  bool (T, H, W), True on padded pixels
      labels        int32 (N,) contiguous class index; 0 in invalid slots
      instance_valid bool (N,)
      target_counts uint8 (N, T, H/4, W/4) `stride4_counts` of each instance's padded masks
                    (binary, all False where the instance is absent); 0 in invalid slots
      present       bool (N, T) the full-resolution mask is non-empty in that frame
      track_ids     int32 (N,) annotation id of each instance; -1 in invalid slots
      frame_indices int32 (T,) sampled frame indices in the video
      video_id      int32 ()
      image_size    int32 (2,) resized (h, w) before padding
    """
    T, N = len(plan.frame_indices), settings.max_instances
    H, W = settings.pad_height, settings.pad_width
    crop_h, crop_w = (video.height, video.width) if plan.crop is None else plan.crop[2:]
    out_h, out_w = train_clip_size(crop_h, crop_w, plan.short_side, settings)

    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    resized: dict[int, np.ndarray] = {}  # a frame drawn twice is decoded once
    for t, frame in enumerate(plan.frame_indices.tolist()):
        if frame not in resized:
            image = _crop(frame_ops.load_frame(video, frame, source), plan.crop)
            resized[frame] = frame_ops.resize_frame(image, out_h, out_w)
        frames[t, :out_h, :out_w] = resized[frame][:, ::-1] if plan.flip else resized[frame]
    padding_mask = np.ones((T, H, W), dtype=bool)
    padding_mask[:, :out_h, :out_w] = False

    labels = np.zeros((N,), dtype=np.int32)
    valid = np.zeros((N,), dtype=bool)
    target_counts = np.zeros((N, T, H // TARGET_STRIDE, W // TARGET_STRIDE), dtype=np.uint8)
    # One instance's padded masks at a time: only the clip area is ever written, so the
    # padding stays False from one slot to the next.
    canvas = np.zeros((T, H, W), dtype=bool)
    present = np.zeros((N, T), dtype=bool)
    track_ids = np.full((N,), -1, dtype=np.int32)
    for slot, (track, track_masks) in enumerate(
            clip_targets(video, plan, (out_h, out_w), N, source)):
        labels[slot], valid[slot], track_ids[slot] = track.label, True, track.track_id
        canvas[:, :out_h, :out_w] = track_masks
        target_counts[slot] = stride4_counts(canvas)
        present[slot] = track_masks.any(axis=(1, 2))
    return {
        "frames": frames, "padding_mask": padding_mask, "labels": labels,
        "instance_valid": valid, "target_counts": target_counts, "present": present,
        "track_ids": track_ids,
        "frame_indices": plan.frame_indices.astype(np.int32),
        "video_id": np.int32(video.video_id),
        "image_size": np.array([out_h, out_w], dtype=np.int32),
    }


def load_eval_video(video: Video, short_side: int, max_size: int,
                    source: str = "") -> dict[str, Any]:
    """A whole video for inference: every frame resized by the shortest-edge rule.

    Returns frames uint8 (L, h, w, 3), video_id, orig_height, orig_width, length, height and
    width (the resized size) as ints, and file_names (list of L str).
    """
    out_h, out_w = shortest_edge_size(video.height, video.width, short_side, max_size)
    frames = np.stack([
        frame_ops.resize_frame(frame_ops.load_frame(video, t, source), out_h, out_w)
        for t in range(video.length)
    ])
    return {"frames": frames, "video_id": video.video_id, "orig_height": video.height,
            "orig_width": video.width, "length": video.length, "height": out_h,
            "width": out_w, "file_names": list(video.file_names)}
