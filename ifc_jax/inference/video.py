"""Reading a video to predict on: a video file (mp4, mkv, avi, webm, ...) or a frame folder.

`open_video(path)` checks the input and counts its frames without decoding them all, then
hands back a `VideoInput` whose frames are decoded lazily, one at a time, in order:

    video = open_video("clip.mp4")                      # or a folder of .jpg/.jpeg/.png
    height, width = inference_size(video.height, video.width, short_side=360, max_size=1333)
    for frame in video.resized_frames(height, width):   # uint8 (height, width, 3) RGB
        ...

so a long video never sits in memory. Frames are resized exactly as evaluation resizes them
(`ifc_jax.data.clips.load_eval_video`: detectron2's shortest-edge rule, PIL bilinear).

* Frame folders: the files ending in .jpg, .jpeg or .png (any case) directly in the folder, in
  natural name order ("frame_2" before "frame_10"; zero-padded names sort the same either
  way). Every frame must have the size of the first. Frame rate: `folder_fps` (default 10).
* Video files are decoded with PyAV (FFmpeg, bundled in its wheels). The first video stream
  is used; the frame count is the number of its packets (demuxed, not decoded), the frame
  rate its average rate. Rotation metadata is ignored: frames come as stored.

Every problem with the input is a `UserError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from ifc_jax.data.clips import shortest_edge_size
from ifc_jax.data.frames import resize_frame
from ifc_jax.io import UserError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_FOLDER_FPS = 10.0


def inference_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(h, w) the model sees for an (height, width) video: the evaluation resize rule."""
    return shortest_edge_size(height, width, short_side, max_size)


def _natural_key(name: str) -> list:
    """Sort key that orders the digit runs of a name by value: f2 < f10."""
    return [(0, int(part), part) if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


def _first_line(err: BaseException) -> str:
    """The reason an error gives, on one line (FFmpeg's without the repeated file name)."""
    text = (getattr(err, "strerror", None) or str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclasses.dataclass(frozen=True)
class VideoInput:
    """An opened video. height, width: the original frame size; frames: RGB uint8.

    frame_paths is set for a frame folder (empty for a video file).
    """

    path: str
    num_frames: int
    height: int
    width: int
    fps: float
    frame_paths: tuple[str, ...] = ()

    @property
    def is_frame_folder(self) -> bool:
        return bool(self.frame_paths)

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame in order, uint8 (height, width, 3) RGB; exactly num_frames of them."""
        if self.is_frame_folder:
            for path in self.frame_paths:
                yield self._read_image(path)
        else:
            for _, frame in self._decode_video(None):
                yield frame

    def frames_at(self, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for the given frame indices, in increasing order.

        A frame folder reads only those files; a video file is decoded from the start (frames
        not asked for are decoded but never converted to RGB).
        """
        wanted = sorted({int(i) for i in indices})
        if wanted and not 0 <= wanted[0] <= wanted[-1] < self.num_frames:
            raise ValueError(f"frame indices must lie in 0..{self.num_frames - 1}")
        if self.is_frame_folder:
            for index in wanted:
                yield index, self._read_image(self.frame_paths[index])
        else:
            yield from self._decode_video(set(wanted))

    def resized_frames(self, height: int, width: int) -> Iterator[np.ndarray]:
        """Every frame resized to uint8 (height, width, 3), as evaluation resizes frames."""
        for frame in self.frames():
            yield resize_frame(frame, height, width)

    def _read_image(self, path: str) -> np.ndarray:
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except FileNotFoundError:
            raise UserError(f"{path}: frame file disappeared while reading {self.path}") from None
        except (OSError, SyntaxError, ValueError) as err:  # PIL: not an image / truncated
            raise UserError(f"{path}: unreadable image ({_first_line(err)})") from None
        if rgb.shape[:2] != (self.height, self.width):
            raise UserError(f"{path}: frame is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but the "
                            f"folder's frames are {self.width}x{self.height}")
        return rgb

    def _decode_video(self, wanted: set[int] | None) -> Iterator[tuple[int, np.ndarray]]:
        """(index, RGB frame) of the video file's frames (all, or the indices in `wanted`)."""
        import av

        if wanted is not None and not wanted:
            return
        stop = self.num_frames if wanted is None else max(wanted) + 1  # frames to go through
        index = 0
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows
                for frame in container.decode(stream):
                    if wanted is None or index in wanted:
                        rgb = frame.to_ndarray(format="rgb24")
                        if rgb.shape[:2] != (self.height, self.width):
                            raise UserError(
                                f"{self.path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]} "
                                f"(WxH) but the video started at {self.width}x{self.height}")
                        yield index, rgb
                    index += 1
                    if index == stop:
                        return
        except av.error.FFmpegError as err:
            raise UserError(f"{self.path}: cannot decode frame {index} "
                            f"({_first_line(err)})") from None
        raise UserError(f"{self.path}: only {index} of the {self.num_frames} frames the "
                        "container lists could be decoded (truncated or corrupt video?)")


def open_video(path: str, folder_fps: float = DEFAULT_FOLDER_FPS) -> VideoInput:
    """Checks a video file or frame folder and counts its frames (see the module docstring)."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such video file or frame folder")
    if os.path.isdir(path):
        return _open_frame_folder(path, folder_fps)
    if os.path.getsize(path) == 0:
        raise UserError(f"{path}: the video file is empty")
    return _open_video_file(path)


def _open_frame_folder(path: str, fps: float) -> VideoInput:
    names = sorted((name for name in os.listdir(path)
                    if name.lower().endswith(FRAME_EXTENSIONS)
                    and os.path.isfile(os.path.join(path, name))), key=_natural_key)
    if not names:
        raise UserError(f"{path}: the folder has no frames (no {'/'.join(FRAME_EXTENSIONS)} "
                        "files in it)")
    frame_paths = tuple(os.path.join(path, name) for name in names)
    size = None
    for frame_path in frame_paths:
        # Image.open reads the header only: checking 2,000 frames this way costs little.
        try:
            with Image.open(frame_path) as image:
                frame_size = image.size  # (W, H)
        except (OSError, SyntaxError, ValueError) as err:
            raise UserError(f"{frame_path}: unreadable image ({_first_line(err)})") from None
        if size is None:
            size = frame_size
        elif frame_size != size:
            raise UserError(f"{frame_path}: frame is {frame_size[0]}x{frame_size[1]} (WxH) but "
                            f"{frame_paths[0]} is {size[0]}x{size[1]}: all frames of a "
                            "folder must have one size")
    return VideoInput(path=path, num_frames=len(frame_paths), height=size[1], width=size[0],
                      fps=float(fps), frame_paths=frame_paths)


def _open_video_file(path: str) -> VideoInput:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise UserError(f"{path}: the file has no video stream")
            stream = container.streams.video[0]
            # One packet per frame: counting packets reads the file without decoding it.
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else DEFAULT_FOLDER_FPS
        with av.open(path) as container:  # decoding one frame proves the codec can
            first = next(container.decode(container.streams.video[0]), None)
            if first is None:
                raise UserError(f"{path}: the video stream has no decodable frame")
            height, width = first.height, first.width
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable video ({_first_line(err)})") from None
    if num_frames < 1:
        raise UserError(f"{path}: the video stream has no frames")
    return VideoInput(path=path, num_frames=num_frames, height=height, width=width, fps=fps)
