"""A synthetic but image-like video for benchmarks and tests, with its ground truth.

A drifting textured background (three sinusoid gratings), moving, spinning toy-dataset shapes
that bounce inside the frame, and Gaussian sensor noise; deterministic in the seed, produced
one frame at a time (any length in O(1) memory). `synthetic_video` also gives each object's
toy class and per-frame visible mask, so a train step can use it as ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ifc_jax.data import toy


def _toy_objects(rng: np.random.Generator, height: int, width: int, count: int
                 ) -> list[toy.ToyObject]:
    """Toy shapes bouncing inside the frame, alive all the time, sized to the frame."""
    scale = min(height, width) / 96.0
    objects = []
    for _ in range(count):
        radius = float(rng.uniform(11.0, 18.0)) * scale
        heading = float(rng.uniform(0, 2 * math.pi))
        speed = float(rng.uniform(0.5, 2.5)) * scale
        box = (radius, max(radius + 1, width - radius), radius, max(radius + 1, height - radius))
        class_index = int(rng.integers(len(toy.CLASSES)))
        objects.append(toy.ToyObject(
            class_index=class_index,
            start=(float(rng.uniform(box[0], box[1])), float(rng.uniform(box[2], box[3]))),
            velocity=(speed * math.cos(heading), speed * math.sin(heading)), radius=radius,
            growth=0.0, min_radius=radius, max_radius=radius,
            angle=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-0.1, 0.1)),
            first_frame=0, last_frame=2**31 - 1,
            colour=tuple(float(c) for c in toy.CLASSES[class_index].colour), bounce_box=box))
    return objects


def synthetic_frames(num_frames: int, height: int, width: int, seed: int = 0,
                     num_objects: int = 4) -> Iterator[np.ndarray]:
    """num_frames uint8 (height, width, 3) frames, one at a time (any length, O(1) memory):
    drifting sinusoid textures, `num_objects` moving toy shapes, Gaussian noise."""
    _, video = synthetic_video(num_frames, height, width, seed, num_objects)
    for frame, _ in video:
        yield frame


def synthetic_video(num_frames: int, height: int, width: int, seed: int = 0,
                    num_objects: int = 4
                    ) -> tuple[np.ndarray, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """`synthetic_frames` with the objects' ground truth.

    Returns (classes (num_objects,) int32 toy class indices, an iterator of (frame (H, W, 3)
    uint8, visible masks (num_objects, H, W) bool)); a mask loses what later objects cover.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(70, 160) + rng.uniform(-20, 20, size=3)
    gratings = []
    for _ in range(3):
        frequency = float(rng.uniform(0.05, 0.35)) * 96.0 / min(height, width)  # as toy.py
        orientation = float(rng.uniform(0, math.pi))
        phase = (xs * math.cos(orientation) + ys * math.sin(orientation)) * frequency
        colour = (rng.uniform(8, 22) * (1.0 + rng.uniform(-0.4, 0.4, size=3))).astype(
            np.float32)
        gratings.append((np.sin(phase)[..., None] * colour, np.cos(phase)[..., None] * colour,
                         float(rng.uniform(-0.1, 0.1))))
    objects = _toy_objects(rng, height, width, num_objects)

    def frames() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for t in range(num_frames):
            image = np.full((height, width, 3), base, np.float32)  # C order, as decoders give
            for sin_layer, cos_layer, speed in gratings:
                image += sin_layer * math.cos(speed * t) + cos_layer * math.sin(speed * t)
            masks = np.zeros((num_objects, height, width), bool)
            for index, obj in enumerate(objects):  # later objects on top
                masks[index] = toy.shape_mask(obj, t, height, width)
                masks[:index] &= ~masks[index]
                image[masks[index]] = obj.colour
            image += rng.normal(0, 3, size=(height, width, 1)).astype(np.float32)
            yield np.clip(image + 0.5, 0, 255).astype(np.uint8), masks

    return np.asarray([obj.class_index for obj in objects], np.int32), frames()


def write_synthetic_video(path: str, num_frames: int, height: int, width: int,
                          fps: int = 30, seed: int = 0) -> None:
    """Streams `synthetic_frames` into an H.264 mp4 at `path` (PyAV; even height and width)."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in synthetic_frames(num_frames, height, width, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)
