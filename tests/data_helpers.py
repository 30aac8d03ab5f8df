"""Shared helpers for the data tests: hand-made YouTube-VIS files and tiny toy datasets."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from PIL import Image

from ifc_jax.data import clips, toy

# A small toy dataset that builds in well under a second.
SMALL_TOY = dict(num_train=6, num_val=3, height=48, width=64, min_frames=3, max_frames=8)


def clip_settings(**overrides) -> clips.ClipSettings:
    """The base config's training clip settings with `overrides` (ClipSettings field names)."""
    from ifc_jax.config import recipe

    return dataclasses.replace(clips.ClipSettings.from_config(recipe("base").data), **overrides)


def make_small_toy(root: str, **overrides) -> str:
    return toy.generate_toy_dataset(root, **{**SMALL_TOY, **overrides})


def frame_pattern(height: int, width: int, frame: int) -> np.ndarray:
    """A frame where every pixel tells where it is: R = 5x + 1, G = 7y + 1, B = 30 t + 1."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([5 * xs + 1, 7 * ys + 1, np.full_like(xs, 30 * frame + 1)],
                    axis=-1).astype(np.uint8)


def write_frames(frames_dir: str, video_name: str, frames: list[np.ndarray]) -> list[str]:
    """Writes frames as JPEG files <frames_dir>/<video_name>/00000.jpg, ...; returns file_names."""
    os.makedirs(os.path.join(frames_dir, video_name), exist_ok=True)
    names = []
    for index, frame in enumerate(frames):
        name = f"{video_name}/{index:05d}.jpg"
        Image.fromarray(frame).save(os.path.join(frames_dir, name), quality=100)
        names.append(name)
    return names


def write_json(path: str, content: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f)
    return path


def rectangle_mask(height: int, width: int, top: int, left: int, bottom: int,
                   right: int) -> np.ndarray:
    """bool (height, width), True on rows [top, bottom) and columns [left, right)."""
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask
