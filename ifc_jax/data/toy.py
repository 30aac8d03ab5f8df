"""A small synthetic video instance segmentation dataset, written in the YouTube-VIS layout.

    root/train.json   root/train/JPEGImages/<video>/<frame>.jpg
    root/valid.json   root/valid/JPEGImages/<video>/<frame>.jpg
    root/manifest.json  (the generation parameters: a second call with the same ones is a no-op)

Four classes, each a distinct shape AND colour: red disk, green square, blue triangle, yellow
cross. Every video has a textured, slowly drifting background and 1..max_objects objects that
move, spin and grow or shrink. The hard cases of the paper are kept on purpose: objects enter
and leave (through the border or by appearing / disappearing), pass in front of each other
(later objects are drawn on top; a fully hidden object is `null` in that frame), and some
frames are motion-blurred (the frame averages sub-frame renders; the mask is the object at the
frame's own time). Videos have varying lengths. Both splits are annotated (valid.json too), so
the toy model can be scored.

`write_toy_coco` also writes the frames as a COCO image set (root/coco/instances_train.json
and instances_valid.json, every COCO_FRAME_STEP-th frame an image), for the COCO pre-training
stage on a CPU (dataset "toy_coco").

Deterministic from the seed: video i of a split depends only on (seed, split, i).
No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from ifc_jax import storage
from ifc_jax.data import masks as mask_codec
from ifc_jax.io import UserError, atomic_write_bytes

GENERATOR_VERSION = 1
SPLITS = {"train": 0, "valid": 1}


@dataclasses.dataclass(frozen=True)
class ToyClass:
    category_id: int
    name: str
    colour: tuple[int, int, int]


CLASSES = (
    ToyClass(1, "disk", (220, 45, 45)),
    ToyClass(2, "square", (40, 190, 70)),
    ToyClass(3, "triangle", (55, 90, 235)),
    ToyClass(4, "cross", (235, 205, 40)),
)


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """Generation parameters; the manifest stores them to make generation idempotent."""

    seed: int = 0
    num_train: int = 80
    num_val: int = 16
    height: int = 96
    width: int = 144
    min_frames: int = 8
    max_frames: int = 20
    max_objects: int = 4
    blur_prob: float = 0.15  # fraction of frames rendered with motion blur
    mask_encoding: str = "rle"  # rle | uncompressed_rle | polygon | mixed (cycles all three)
    jpeg_quality: int = 90


@dataclasses.dataclass(frozen=True)
class ToyObject:
    """Motion model of one object; sizes are circumradii in pixels, times in frames."""

    class_index: int
    start: tuple[float, float]  # (x, y) centre at t = 0
    velocity: tuple[float, float]  # pixels per frame
    radius: float
    growth: float  # radius(t) = radius * exp(growth * t), clipped to [min_radius, max_radius]
    min_radius: float
    max_radius: float
    angle: float
    spin: float  # radians per frame
    first_frame: int  # alive in frames [first_frame, last_frame)
    last_frame: int
    colour: tuple[float, float, float]
    # (x_min, x_max, y_min, y_max) the centre bounces inside; None: straight line (the object
    # may leave the frame).
    bounce_box: tuple[float, float, float, float] | None = None

    def size_at(self, t: float) -> float:
        """Circumradius at time t: grows or shrinks exponentially, within [min, max]."""
        return min(max(self.radius * math.exp(self.growth * t), self.min_radius),
                   self.max_radius)

    def centre(self, t: float) -> tuple[float, float]:
        x, y = self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t
        if self.bounce_box is not None:
            x_min, x_max, y_min, y_max = self.bounce_box
            x, y = _reflect(x, x_min, x_max), _reflect(y, y_min, y_max)
        return x, y


def _reflect(position: float, low: float, high: float) -> float:
    """Folds a straight-line coordinate into [low, high] as a ball bouncing between walls."""
    span = high - low
    folded = (position - low) % (2 * span)
    return low + (folded if folded <= span else 2 * span - folded)


@dataclasses.dataclass(frozen=True)
class ToyVideo:
    """A rendered video: what the JSON + JPEGs encode (masks exactly, frames before JPEG)."""

    frames: np.ndarray  # uint8 (L, H, W, 3)
    masks: np.ndarray  # bool (num_objects, L, H, W), visible part; all False where absent
    objects: tuple[ToyObject, ...]
    blurred_frames: tuple[int, ...]


def shape_mask(obj: ToyObject, t: float, height: int, width: int) -> np.ndarray:
    """bool (height, width): pixels whose centre lies inside the object at time t."""
    cx, cy = obj.centre(t)
    radius = obj.size_at(t)
    angle = obj.angle + obj.spin * t
    dx = (np.arange(width) + 0.5)[None, :] - cx
    dy = (np.arange(height) + 0.5)[:, None] - cy
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    name = CLASSES[obj.class_index].name
    if name == "disk":
        return dx * dx + dy * dy <= radius * radius
    if name == "square":
        half = radius * 0.8
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == "triangle":
        inside = np.ones((height, width), dtype=bool)
        for k in range(3):  # three half-planes at distance 0.6 radius from the centre
            normal = math.pi / 2 + 2 * math.pi * k / 3
            inside &= u * math.cos(normal) + v * math.sin(normal) <= radius * 0.6
        return inside
    arm = radius * 0.38  # cross
    return ((np.abs(u) <= radius) & (np.abs(v) <= arm)) | (
        (np.abs(v) <= radius) & (np.abs(u) <= arm))


def _random_object(rng: np.random.Generator, spec: ToySpec, length: int) -> ToyObject:
    scale = min(spec.height, spec.width) / 96.0
    # Radius >= 10 px (at 96 px frame height) keeps every shape >= 16 px across: visible at
    # stride 8.
    radius = float(rng.uniform(11.0, 18.0)) * scale
    speed = float(rng.uniform(0.5, 2.5)) * scale
    heading = float(rng.uniform(0, 2 * math.pi))
    velocity = (speed * math.cos(heading), speed * math.sin(heading))
    margin = radius  # a bouncing object stays whole in view (until it grows)
    bounce_box = None
    motion = rng.random()
    if motion < 0.2:  # start just outside the frame, heading in: the object enters
        side = int(rng.integers(4))  # left, right, top, bottom
        inward = [(1, 0), (-1, 0), (0, 1), (0, -1)][side]
        along = float(rng.uniform(0, spec.width if side >= 2 else spec.height))
        outside = [-radius, spec.width + radius, -radius, spec.height + radius][side]
        start = (outside, along) if side < 2 else (along, outside)
        inward_speed = float(rng.uniform(1.0, 3.0)) * scale
        sideways = float(rng.uniform(-1.0, 1.0)) * scale
        velocity = (inward[0] * inward_speed + abs(inward[1]) * sideways,
                    inward[1] * inward_speed + abs(inward[0]) * sideways)
    else:
        start = (float(rng.uniform(margin, max(margin + 1, spec.width - margin))),
                 float(rng.uniform(margin, max(margin + 1, spec.height - margin))))
        if motion >= 0.35:  # most objects stay in view; the others may drift out (leave)
            bounce_box = (margin, max(margin + 1, spec.width - margin),
                          margin, max(margin + 1, spec.height - margin))
    # Some objects appear or vanish in mid-video, not through the border.
    first = int(rng.integers(1, max(2, length // 2))) if rng.random() < 0.15 else 0
    # (A 2-frame video has no frame to vanish at; the draws of longer videos are unchanged.)
    last = (int(rng.integers(length // 2 + 1, length))
            if rng.random() < 0.15 and length > 2 else length)
    class_index = int(rng.integers(len(CLASSES)))
    jitter = rng.uniform(-15, 15, size=3)
    colour = tuple(float(np.clip(c + j, 0, 255))
                   for c, j in zip(CLASSES[class_index].colour, jitter, strict=True))
    return ToyObject(class_index=class_index, start=start, velocity=velocity, radius=radius,
                     growth=float(rng.uniform(-0.03, 0.04)),
                     min_radius=10.0 * scale, max_radius=26.0 * scale,
                     angle=float(rng.uniform(0, 2 * math.pi)),
                     spin=float(rng.uniform(-0.15, 0.15)),
                     first_frame=first, last_frame=max(last, first + 2), colour=colour,
                     bounce_box=bounce_box)


def _steer_into(obj: ToyObject, target: ToyObject, rng: np.random.Generator) -> ToyObject:
    """Moves `obj` so that it passes over `target` at some time both are alive (occlusion)."""
    low, high = max(obj.first_frame, target.first_frame), min(obj.last_frame, target.last_frame)
    if high <= low:
        return obj
    meet = float(rng.integers(low, high))
    tx, ty = target.centre(meet)
    offset = rng.uniform(-0.6, 0.6, size=2) * target.radius
    start = (tx + offset[0] - obj.velocity[0] * meet, ty + offset[1] - obj.velocity[1] * meet)
    return dataclasses.replace(obj, start=start, bounce_box=None)  # a straight pass


def _background(rng: np.random.Generator, spec: ToySpec):
    """A drifting texture: muted base colour + three sinusoid gratings. Returns t -> (H, W, 3)."""
    base = rng.uniform(70, 160) + rng.uniform(-20, 20, size=3)
    gratings = [(rng.uniform(0.05, 0.35), rng.uniform(0, math.pi), rng.uniform(8, 22),
                 rng.uniform(-0.4, 0.4, size=3)) for _ in range(3)]
    drift = rng.uniform(-1.0, 1.0, size=2)
    ys, xs = np.mgrid[0:spec.height, 0:spec.width].astype(np.float32)
    # sin(phase + speed * t) = sin(phase) cos(speed t) + cos(phase) sin(speed t): the drift
    # only rotates two precomputed images, so a frame costs a few multiply-adds per pixel.
    layers = []
    for frequency, orientation, amplitude, tint in gratings:
        direction = np.array([math.cos(orientation), math.sin(orientation)])
        phase = (xs * direction[0] + ys * direction[1]) * frequency
        colour = (amplitude * (1.0 + tint)).astype(np.float32)
        layers.append((np.sin(phase)[..., None] * colour, np.cos(phase)[..., None] * colour,
                       float(drift @ direction * frequency)))
    base_image = np.broadcast_to(base, (spec.height, spec.width, 3)).astype(np.float32)

    def render(t: float) -> np.ndarray:
        image = base_image.copy()
        for sin_layer, cos_layer, speed in layers:
            image += sin_layer * math.cos(speed * t) + cos_layer * math.sin(speed * t)
        return image

    return render


def render_video(spec: ToySpec, split: str, index: int) -> ToyVideo:
    """Renders video `index` of `split` ('train' or 'valid'); deterministic in (spec.seed, ...)."""
    rng = np.random.default_rng([spec.seed, SPLITS[split], index])
    length = int(rng.integers(spec.min_frames, spec.max_frames + 1))
    H, W = spec.height, spec.width
    background = _background(rng, spec)
    objects: list[ToyObject] = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        obj = _random_object(rng, spec, length)
        if objects and rng.random() < 0.35:
            obj = _steer_into(obj, objects[int(rng.integers(len(objects)))], rng)
        objects.append(obj)

    def alive(obj: ToyObject, frame: int) -> bool:
        return obj.first_frame <= frame < obj.last_frame

    def paint(frame: int, t: float) -> np.ndarray:
        image = background(t)
        for obj in objects:  # list order is depth order: later objects on top
            if alive(obj, frame):
                image[shape_mask(obj, t, H, W)] = obj.colour
        return image

    frames = np.zeros((length, H, W, 3), dtype=np.uint8)
    masks = np.zeros((len(objects), length, H, W), dtype=bool)
    blurred = []
    for frame in range(length):
        covered = np.zeros((H, W), dtype=bool)
        for k in reversed(range(len(objects))):  # top-most first: it hides the ones below
            if alive(objects[k], frame):
                shape = shape_mask(objects[k], frame, H, W)
                masks[k, frame] = shape & ~covered
                covered |= shape
        if rng.random() < spec.blur_prob:
            blurred.append(frame)
            image = np.mean([paint(frame, frame + dt) for dt in np.linspace(-1, 1, 7)], axis=0)
        else:
            image = paint(frame, frame)
        image = image + rng.normal(0, 3, size=image.shape)  # sensor noise
        frames[frame] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return ToyVideo(frames, masks, tuple(objects), tuple(blurred))


def _frame_encoding(spec: ToySpec, track_number: int, frame: int) -> str:
    if spec.mask_encoding == "mixed":
        return mask_codec.ENCODINGS[(track_number + frame) % len(mask_codec.ENCODINGS)]
    return spec.mask_encoding


def write_split(spec: ToySpec, root: str, split: str, num_videos: int) -> None:
    """Writes root/<split>.json and root/<split>/JPEGImages/... for `num_videos` videos."""
    videos, annotations = [], []
    for index in range(num_videos):
        toy = render_video(spec, split, index)
        name = f"{split}_{index:04d}"
        folder = os.path.join(root, split, "JPEGImages", name)
        os.makedirs(folder, exist_ok=True)
        file_names = []
        for frame, image in enumerate(toy.frames):
            file_names.append(f"{name}/{frame:05d}.jpg")
            Image.fromarray(image).save(os.path.join(folder, f"{frame:05d}.jpg"),
                                        quality=spec.jpeg_quality)
        video_id = index + 1
        videos.append({"id": video_id, "width": spec.width, "height": spec.height,
                       "length": len(file_names), "file_names": file_names,
                       "toy_blurred_frames": list(toy.blurred_frames)})
        for k, obj in enumerate(toy.objects):
            track_masks = toy.masks[k]
            if not track_masks.any():
                continue  # never visible (e.g. always behind others): no track
            segmentations, areas, bboxes = [], [], []
            track_number = len(annotations)
            for frame, mask in enumerate(track_masks):
                encoding = _frame_encoding(spec, track_number, frame)
                segmentations.append(mask_codec.encode_mask(mask, encoding))
                visible = bool(mask.any())
                areas.append(float(mask.sum()) if visible else None)
                bboxes.append(mask_codec.mask_bbox(mask) if visible else None)
            annotations.append({
                "id": track_number + 1, "video_id": video_id,
                "category_id": CLASSES[obj.class_index].category_id, "iscrowd": 0,
                "width": spec.width, "height": spec.height, "length": 1,
                "segmentations": segmentations, "areas": areas, "bboxes": bboxes})
    content = {
        "info": {"description": "ifc-jax toy video instance segmentation dataset",
                 "generator_version": GENERATOR_VERSION},
        "licenses": [],
        "videos": videos,
        "categories": [{"id": c.category_id, "name": c.name, "supercategory": "shape"}
                       for c in CLASSES],
        "annotations": annotations,
    }
    with open(os.path.join(root, f"{split}.json"), "w", encoding="utf-8") as f:
        json.dump(content, f)


MANIFEST = "manifest.json"


def _manifest(spec: ToySpec) -> dict:
    return {"generator_version": GENERATOR_VERSION, "spec": dataclasses.asdict(spec)}


def is_generated(root: str, spec: ToySpec) -> bool:
    """True when `root` holds a finished toy dataset made with exactly these parameters."""
    try:
        return json.loads(storage.read_bytes(storage.join(root, MANIFEST))) == _manifest(spec)
    except (OSError, ValueError):
        return False


def generate_toy_dataset(root: str = "data/toy", seed: int = 0, num_train: int = 80,
                         num_val: int = 16, **spec_fields) -> str:
    """Writes the toy dataset to `root` unless it is already there with the same parameters.

    `spec_fields` are the other `ToySpec` fields (height, width, mask_encoding, ...).
    Atomic: everything is written to a temporary sibling folder which is renamed to `root` at
    the end, so an interrupted run leaves no half dataset behind; a `root` made with other
    parameters is replaced, unless it also holds files a generation does not write (a
    `split` output, say): then a UserError names them. Returns `root`.
    """
    spec = ToySpec(seed=seed, num_train=num_train, num_val=num_val, **spec_fields)
    if spec.mask_encoding not in (*mask_codec.ENCODINGS, "mixed"):
        raise UserError(f"toy mask_encoding {spec.mask_encoding!r}: expected one of "
                        f"{(*mask_codec.ENCODINGS, 'mixed')}")
    if is_generated(root, spec):
        return root
    if storage.is_url(root):
        raise UserError(f"{root}: no toy dataset with these parameters there; the toy dataset "
                        "is generated on local disk only (generate it locally with the same "
                        "config and copy the folder there)")
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f"{root}: exists and is not a folder; cannot hold the toy dataset")
    if os.path.exists(root) and os.listdir(root) and not os.path.isfile(
            os.path.join(root, MANIFEST)):
        raise UserError(f"{root}: exists and is not a toy dataset; refusing to replace it")
    foreign = _foreign_entries(root)
    if foreign:
        raise UserError(
            f"{root}: holds a toy dataset made with other parameters and also "
            f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which the "
            "generator did not write; refusing to replace it (move those away, or give "
            "config.data.root another folder)")
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".toy-", dir=parent)
    try:
        write_split(spec, staging, "train", spec.num_train)
        write_split(spec, staging, "valid", spec.num_val)
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(_manifest(spec), f, indent=1)
        _replace_dir(staging, root, spec)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


# What a generation writes at the root (write_toy_coco adds COCO_FOLDER): a dataset made with
# other parameters is replaced as a whole only if it holds nothing else.
_GENERATED = {"train": ("JPEGImages",), "valid": ("JPEGImages",), "train.json": None,
              "valid.json": None, MANIFEST: None, "coco": None}


def _foreign_entries(root: str) -> list[str]:
    """Paths under `root` (relative, sorted) that no toy generation writes."""
    if not os.path.isdir(root):
        return []
    foreign = []
    for name in sorted(os.listdir(root)):
        if name not in _GENERATED:
            foreign.append(name)
        elif _GENERATED[name] is not None:
            inner = os.path.join(root, name)
            extra = (sorted(set(os.listdir(inner)) - set(_GENERATED[name]))
                     if os.path.isdir(inner) else ["(not a folder)"])
            foreign += [f"{name}/{entry}" for entry in extra]
    return foreign


def _replace_dir(staging: str, root: str, spec: ToySpec) -> None:
    if os.path.exists(root):
        if is_generated(root, spec):  # another process finished the same dataset first
            return
        old = tempfile.mkdtemp(prefix=".toy-old-", dir=os.path.dirname(os.path.abspath(root)))
        os.rename(root, os.path.join(old, "data"))
        try:
            os.rename(staging, root)
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.rename(staging, root)
        except OSError:
            if not is_generated(root, spec):  # lost a race against a different generation
                raise


COCO_FOLDER = "coco"
COCO_FRAME_STEP = 4  # every 4th frame of a toy video is an image of the toy COCO set


def coco_json(split: str) -> str:
    """Path of the toy COCO file of `split` ("train" or "valid"), relative to the root."""
    return f"{COCO_FOLDER}/instances_{split}.json"


def write_toy_coco(root: str) -> None:
    """Writes the toy COCO files of both splits beside a generated toy dataset at `root`
    (no-op when they are there; they derive from the video files alone).

    Frame t of a video (t = 0, 4, 8, ...) is an image whose `file_name` is the frame's path
    relative to `root`; each object visible in it is an annotation with the segmentation the
    video file gives that frame (so the set mixes RLE, uncompressed RLE and polygons when the
    toy dataset does), its area and box.
    """
    for split in SPLITS:
        if storage.is_url(root):
            if not storage.isfile(storage.join(root, coco_json(split))):
                raise UserError(f"{root}: no toy COCO files there; they are generated on local "
                                "disk only (generate them locally and copy the folder there)")
            continue
        path = os.path.join(root, coco_json(split))
        if os.path.isfile(path):
            continue
        with open(os.path.join(root, f"{split}.json"), encoding="utf-8") as f:
            videos = json.load(f)
        images, annotations = [], []
        by_video: dict[int, list[dict]] = {}
        for track in videos["annotations"]:
            by_video.setdefault(track["video_id"], []).append(track)
        for video in videos["videos"]:
            for frame in range(0, len(video["file_names"]), COCO_FRAME_STEP):
                image_id = len(images) + 1
                images.append({"id": image_id, "height": video["height"],
                               "width": video["width"],
                               "file_name": f"{split}/JPEGImages/{video['file_names'][frame]}"})
                for track in by_video.get(video["id"], []):
                    if mask_codec.is_absent(track["segmentations"][frame]):
                        continue
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": image_id,
                        "category_id": track["category_id"], "iscrowd": 0,
                        "segmentation": track["segmentations"][frame],
                        "area": track["areas"][frame], "bbox": track["bboxes"][frame]})
        content = {"info": {"description": f"ifc-jax toy dataset, {split} frames as images"},
                   "images": images, "annotations": annotations,
                   "categories": videos["categories"]}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, json.dumps(content).encode())
