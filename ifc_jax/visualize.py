"""Pictures of predicted tracks: mask overlays, an animated GIF, an MP4, keyframe PNGs and
(on request) one PNG per frame.

Each track keeps one colour through the video (`track_colour`). A frame is drawn as: the
track's mask blended over the frame (alpha 0.5), a solid contour around it, and a label
"name score" at the top-left corner of the mask's bounding box. Only tracks whose best real
class has probability >= a display threshold are drawn (`display_tracks`); results.json keeps
them all.

    tracks = display_tracks(class_probs, segmentations, class_names, min_score=0.3)
    gif_indices, key_indices = overlay_frame_indices(num_frames, gif_frames=150, keyframes=4)
    written = write_overlays(video.frames_at(gif_indices + key_indices), tracks, out_dir,
                             gif_indices, key_indices, fps=video.fps)

The GIF holds at most `gif_frames` frames spread evenly over the video, each shown for the
time it stands for (so the GIF plays in about real time), scaled down to `max_side` pixels on
its long side; GIF frames are kept palette-quantised (1 byte per pixel) until written. The
MP4 (`mp4_name`) has every frame at the original size and the video's frame rate, H.264
(libx264) when PyAV's FFmpeg has it, else MPEG-4 Part 2; it is encoded as the frames come, so
it is never held in memory. With `frames_dir` every drawn frame is also a PNG there. Every
file is written atomically (temp file + rename). Frames can be drawn on several threads at
once (`write_overlays(threads=...)`); the files are still written in frame order.
"""

from __future__ import annotations

import collections
import colorsys
import concurrent.futures
import contextlib
import dataclasses
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ifc_jax.data.masks import decode_rle, rle_areas, rle_size
from ifc_jax.io import atomic_write_bytes, atomic_writer

MASK_ALPHA = 0.5
GOLDEN_RATIO_CONJUGATE = 0.618033988749895

Colour = tuple[int, int, int]


def track_colour(index: int) -> Colour:
    """A saturated RGB colour for track `index`; hues step by the golden ratio, so colours of
    neighbouring indices are far apart on the colour wheel."""
    hue = (index * GOLDEN_RATIO_CONJUGATE) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return int(red * 255 + 0.5), int(green * 255 + 0.5), int(blue * 255 + 0.5)


def evenly_spaced(num_frames: int, count: int) -> list[int]:
    """Up to `count` distinct frame indices spread evenly over 0..num_frames-1, first and last
    included (all frames when count >= num_frames)."""
    if count <= 0 or num_frames <= 0:
        return []
    if count >= num_frames:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, count)})


def overlay_frame_indices(num_frames: int, gif_frames: int, keyframes: int
                          ) -> tuple[list[int], list[int]]:
    """(GIF frame indices, keyframe indices), each evenly spaced over the video."""
    return evenly_spaced(num_frames, gif_frames), evenly_spaced(num_frames, keyframes)


@dataclasses.dataclass(frozen=True)
class DisplayTrack:
    """A track to draw: its colour, label "name score" and per-frame RLEs (one per frame)."""

    track_index: int
    label: str
    score: float
    colour: Colour
    segmentations: Sequence[dict]


def display_tracks(track_class_probs: Sequence[np.ndarray],
                   track_segmentations: Sequence[Sequence[dict]],
                   class_names: Sequence[str], min_score: float) -> list[DisplayTrack]:
    """The tracks whose best real class (arg-max over the K real classes of the (K+1,) mean
    probabilities) scores >= min_score, labelled with that class; colours by track index."""
    tracks = []
    for index, (probs, segmentations) in enumerate(
            zip(track_class_probs, track_segmentations, strict=True)):
        real = np.asarray(probs, np.float64)[:-1]  # the last entry is "no object"
        best = int(np.argmax(real))
        if real[best] >= min_score:
            tracks.append(DisplayTrack(index, f"{class_names[best]} {real[best]:.2f}",
                                       float(real[best]), track_colour(index), segmentations))
    return tracks


def mask_contour(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """bool (H, W): the pixels of `mask` within `thickness` pixels (4-neighbourhood steps) of
    its border or of the image border."""
    inner = mask.copy()
    for _ in range(max(1, thickness)):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0], shrunk[-1], shrunk[:, 0], shrunk[:, -1] = False, False, False, False
        inner = shrunk
    return mask & ~inner


def _label_font(frame_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(10, frame_height // 30)
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def draw_overlay(frame: np.ndarray, masks: Sequence[tuple[np.ndarray, Colour, str]],
                 alpha: float = MASK_ALPHA) -> np.ndarray:
    """frame uint8 (H, W, 3) with each (bool (H, W) mask, colour, label) drawn on it.

    Inside a mask: round(alpha * colour + (1 - alpha) * pixel); its contour in the solid
    colour; the label on a box of the colour at the mask's top-left corner. Masks are drawn in
    order (later ones on top); empty masks are skipped.
    """
    height, width = frame.shape[:2]
    # Colour planes (3, H, W), blended in place through a contiguous scratch plane: a mask
    # then selects contiguous runs of each plane (numpy's masked copies are fast on those,
    # slow on channels-last pixels, broadcast masks or strided scratch), and no frame-sized
    # array is allocated per mask (a noisy mask's bounding box is the whole frame).
    planes = frame.transpose(2, 0, 1).astype(np.float32)
    scratch = np.empty(height * width, np.float32)
    thickness = max(1, min(height, width) // 180)
    labels = []
    for mask, colour, label in masks:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            continue
        # Work on the mask's bounding box only (views into the planes).
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        inside = mask[box]
        blended = scratch[:inside.size].reshape(inside.shape)
        colour_array = np.asarray(colour, np.float32)
        contour = mask_contour(inside, thickness)
        for plane, value in zip(planes, colour_array, strict=True):
            region = plane[box]
            # The docstring's formula in float32: (1 - alpha) * pixel + alpha * colour.
            np.multiply(region, np.float32(1.0 - alpha), out=blended)
            np.add(blended, alpha * value, out=blended)
            np.copyto(region, blended, where=inside)
            np.copyto(region, value, where=contour)
        labels.append((int(cols[0]), int(rows[0]), colour, label))
    np.add(planes, np.float32(0.5), out=planes)
    np.clip(planes, 0, 255, out=planes)
    image = Image.merge("RGB", [Image.fromarray(plane) for plane in planes.astype(np.uint8)])
    if labels:
        draw = ImageDraw.Draw(image)
        font = _label_font(height)
        for left, top, colour, label in labels:
            box = draw.textbbox((0, 0), label, font=font)
            text_w, text_h = box[2] - box[0] + 4, box[3] - box[1] + 4
            x = min(max(0, left), max(0, width - text_w))
            y = top - text_h if top - text_h >= 0 else min(top, max(0, height - text_h))
            draw.rectangle((x, y, x + text_w - 1, y + text_h - 1), fill=colour)
            luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            draw.text((x + 2 - box[0], y + 2 - box[1]), label, font=font,
                      fill=(0, 0, 0) if luminance > 140 else (255, 255, 255))
    return np.asarray(image)


def render_frame(frame: np.ndarray, frame_index: int, tracks: Sequence[DisplayTrack],
                 alpha: float = MASK_ALPHA) -> np.ndarray:
    """Frame `frame_index` (uint8 (H, W, 3), original size) with the tracks' masks on it."""
    rles = [track.segmentations[frame_index] for track in tracks]
    for rle in rles:
        if rle_size(rle) != frame.shape[:2]:
            raise ValueError(f"mask {rle_size(rle)} does not fit frame {frame.shape[:2]}")
    # A track is absent from most frames of a long video: its empty masks (drawn as nothing)
    # are skipped without decoding them, from the areas pycocotools reads off the counts.
    drawn = (rle_areas(rles) > 0 if all(not isinstance(rle["counts"], list) for rle in rles)
             else [True] * len(rles))
    return draw_overlay(frame, [(decode_rle(rle), track.colour, track.label)
                                for rle, track, draw in zip(rles, tracks, drawn, strict=True)
                                if draw], alpha)


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 image. zlib level 1: on video frames 3-5x faster
    than Pillow's default level 6 for files 8-27% larger, which matters when every
    frame is written (`--png-frames`)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def gif_frame_ms(num_frames: int, num_gif_frames: int, fps: float) -> int:
    """How long each GIF frame shows, in ms: the video time it stands for, on GIF's 10 ms grid,
    at least 20 ms (browsers slow shorter frames down to 100 ms)."""
    seconds = num_frames / max(num_gif_frames, 1) / max(fps, 1e-6)
    return max(20, int(round(seconds * 100)) * 10)


def encode_gif(frames: Sequence[Image.Image], frame_ms: int) -> bytes:
    """An endlessly looping animated GIF of the given (palette or RGB) frames."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]),
                   duration=frame_ms, loop=0)
    return buffer.getvalue()


def _gif_image(rendered: np.ndarray, max_side: int) -> Image.Image:
    image = Image.fromarray(rendered)
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.Resampling.BILINEAR)
    # Quantised now, so the held GIF frames take 1 byte per pixel.
    return image.quantize(colors=256, method=Image.Quantize.FASTOCTREE)


def keyframe_name(frame_index: int, num_frames: int) -> str:
    digits = max(4, len(str(max(num_frames - 1, 0))))
    return f"keyframe_{frame_index:0{digits}d}.png"


def frame_png_name(frame_index: int, num_frames: int) -> str:
    digits = max(4, len(str(max(num_frames - 1, 0))))
    return f"frame_{frame_index:0{digits}d}.png"


def mp4_codec() -> str:
    """H.264 (libx264) when the FFmpeg in PyAV's wheel has the encoder, else MPEG-4 Part 2
    (FFmpeg's own encoder, always there; larger files, plays everywhere too)."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def even_size(frame: np.ndarray) -> np.ndarray:
    """frame (H, W, 3) padded to an even height and width by repeating its last row/column.

    yuv420p (the pixel format players expect of H.264/MPEG-4) stores colour at half
    resolution, so encoders need even sizes; padding by one pixel (rather than cropping)
    keeps every drawn pixel of the overlay."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


@contextlib.contextmanager
def mp4_writer(path: str, fps: float) -> Iterator[Callable[[np.ndarray], None]]:
    """A function that appends an RGB uint8 (H, W, 3) frame (every frame of one size) to an
    MP4 at `path`, shown `fps` frames per second. The file appears (atomically) when the
    block ends without error; frames are encoded as they come."""
    import av

    # A rational rate: 29.97 fps videos are 30000/1001, which the MP4 time base keeps exact.
    rate = Fraction(fps if fps > 0 else 10.0).limit_denominator(1001)
    codec = mp4_codec()
    with atomic_writer(path, "wb") as file, av.open(file, "w", format="mp4") as container:
        stream = None

        def write(frame: np.ndarray) -> None:
            nonlocal stream
            frame = even_size(frame)
            if stream is None:  # sized by the first frame
                options = {"crf": "20", "preset": "veryfast"} if codec == "libx264" else {}
                stream = container.add_stream(codec, rate=rate, options=options)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                if codec == "mpeg4":  # no CRF: about 0.25 bit per pixel and frame
                    stream.bit_rate = int(frame.shape[0] * frame.shape[1] * float(rate) / 4)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)

        yield write
        if stream is not None:
            for packet in stream.encode():  # flush the encoder's delayed frames
                container.mux(packet)


def _picture(frame: np.ndarray, index: int, tracks: Sequence[DisplayTrack], *, png: bool,
             gif_side: int | None) -> tuple[np.ndarray, bytes | None, Image.Image | None]:
    """Frame `index` drawn, with its PNG bytes (`png`) and its GIF frame (`gif_side`: the
    GIF's max side, None: not a GIF frame): one frame's work, independent of the others."""
    rendered = render_frame(frame, index, tracks)
    return (rendered, encode_png(rendered) if png else None,
            _gif_image(rendered, gif_side) if gif_side is not None else None)


def write_overlays(frames: Iterable[tuple[int, np.ndarray]], tracks: Sequence[DisplayTrack],
                   output_dir: str, gif_indices: Sequence[int], key_indices: Sequence[int], *,
                   num_frames: int, fps: float, max_side: int = 640,
                   gif_name: str = "overlay.gif", mp4_name: str | None = None,
                   frames_dir: str | None = None, threads: int = 1
                   ) -> dict[str, list[str] | str | int | None]:
    """Draws the tracks on the frames and writes output_dir/overlay.gif, keyframe PNGs and,
    when asked, output_dir/`mp4_name` (every frame, at `fps`) and one PNG per frame in
    `frames_dir` (frame_NNNN.png).

    frames: (index, uint8 (H, W, 3) original-size frame) for at least every index in
    gif_indices and key_indices (every index 0..num_frames-1 when an MP4 or frame PNGs are
    asked for), in increasing order (others are ignored).
    threads: frames drawn (and their PNGs and GIF frames made) at once on a thread pool;
    the numpy and Pillow work there runs without the GIL. The files are written in frame
    order on the calling thread, the same bytes for any count; 1: all on the calling thread.
    Returns {"gif": path or None (no GIF frames asked for), "keyframes": [paths],
    "mp4": path or None, "frames_dir": frames_dir or None, "frame_pngs": count}.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    every_frame = mp4_name is not None or frames_dir is not None
    gif_set, key_set = set(gif_indices), set(key_indices)
    gif_images: list[Image.Image] = []
    keyframes: list[str] = []
    frame_pngs = 0
    mp4_path = os.path.join(output_dir, mp4_name) if mp4_name is not None else None

    def wanted() -> Iterator[tuple[int, np.ndarray]]:
        expected = 0
        for index, frame in frames:
            if not every_frame and index not in gif_set and index not in key_set:
                continue
            if every_frame and index != expected:
                raise ValueError(f"frame {expected} missing: an MP4 or frame PNGs need every "
                                 "frame, in order")
            expected = index + 1
            yield index, frame
        if every_frame and expected != num_frames:
            raise ValueError("the frames iterable missed some of the asked-for frame indices")

    def work(index: int, frame: np.ndarray) -> tuple[np.ndarray, bytes | None,
                                                     Image.Image | None]:
        return _picture(frame, index, tracks,
                        png=index in key_set or frames_dir is not None,
                        gif_side=max_side if index in gif_set else None)

    with contextlib.ExitStack() as stack:
        write_mp4 = stack.enter_context(mp4_writer(mp4_path, fps)) if mp4_path else None
        if threads == 1:
            pictures = ((index, work(index, frame)) for index, frame in wanted())
        else:
            pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(threads))
            stack.callback(pool.shutdown, cancel_futures=True)  # on an error: stop early
            pictures = ((index, future.result()) for index, future in _ahead(
                ((index, pool.submit(work, index, frame)) for index, frame in wanted()),
                2 * threads))
        for index, (rendered, png, gif_image) in pictures:
            if write_mp4 is not None:
                write_mp4(rendered)
            if frames_dir is not None:
                atomic_write_bytes(os.path.join(frames_dir, frame_png_name(index, num_frames)),
                                   png)
                frame_pngs += 1
            if index in key_set:
                path = os.path.join(output_dir, keyframe_name(index, num_frames))
                atomic_write_bytes(path, png)
                keyframes.append(path)
            if gif_image is not None:
                gif_images.append(gif_image)
        if len(gif_images) != len(gif_set) or len(keyframes) != len(key_set):
            raise ValueError("the frames iterable missed some of the asked-for frame indices")
    gif_path = None
    if gif_images:
        gif_path = os.path.join(output_dir, gif_name)
        atomic_write_bytes(gif_path, encode_gif(
            gif_images, gif_frame_ms(num_frames, len(gif_images), fps)))
    return {"gif": gif_path, "keyframes": keyframes, "mp4": mp4_path,
            "frames_dir": frames_dir, "frame_pngs": frame_pngs}


def _ahead(items: Iterator[tuple[int, concurrent.futures.Future]], count: int
           ) -> Iterator[tuple[int, concurrent.futures.Future]]:
    """The items of `items` in order, drawing up to `count` of them ahead of the one
    yielded (so that many frames are in the pool while the first is written)."""
    waiting: collections.deque = collections.deque()
    for item in items:
        waiting.append(item)
        if len(waiting) > count:
            yield waiting.popleft()
    while waiting:
        yield waiting.popleft()
