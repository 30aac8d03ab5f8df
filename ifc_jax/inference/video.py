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
  rate its average rate.
* Rotation: phone videos store frames sideways (or upside down) with a display matrix that
  tells players to turn them. It is honoured: frames come upright, as a player shows them,
  and height/width are the upright size (`VideoInput.rotation` keeps the angle). Only quarter
  turns are applied (the angle is rounded to a multiple of 90 degrees); a mirroring in the
  matrix is ignored.

`find_videos(arguments)` turns what a user names (video files, frame folders, folders of
videos, glob patterns) into the list of videos to predict on, checking each exists.

Every problem with the input is a `UserError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from ifc_jax.data.clips import shortest_edge_size
from ifc_jax.data.frames import resize_frame
from ifc_jax.io import UserError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Files a folder of videos is searched for (a file named explicitly may have any extension:
# PyAV probes its content).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ts", ".mts", ".ogv")
DEFAULT_FOLDER_FPS = 10.0
GLOB_CHARACTERS = frozenset("*?[")


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


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """frame (H, W, C) as a player shows it: turned `rotation` degrees counterclockwise (a
    multiple of 90; FFmpeg's display-matrix convention, as PyAV's `VideoFrame.rotation` gives
    it). (H, W, C) for 0 and 180, (W, H, C) for +-90. A contiguous copy unless rotation is 0."""
    quarter_turns = (rotation // 90) % 4
    if not quarter_turns:
        return frame
    # np.rot90 turns an image counterclockwise (rows run down, columns right).
    return np.ascontiguousarray(np.rot90(frame, quarter_turns))


def quarter_rotation(degrees: float) -> int:
    """A display rotation in degrees rounded to the nearest quarter turn, in 0, 90, 180, 270."""
    return int(round(degrees / 90.0)) % 4 * 90


@dataclasses.dataclass(frozen=True)
class VideoInput:
    """An opened video. height, width: the upright frame size (as a player shows the video);
    frames: RGB uint8, upright.

    frame_paths is set for a frame folder (empty for a video file). rotation: the quarter turn
    (0, 90, 180, 270 degrees counterclockwise) applied to the stored frames of a video file
    to make them upright (from its display matrix; 0 for a frame folder).
    """

    path: str
    num_frames: int
    height: int
    width: int
    fps: float
    frame_paths: tuple[str, ...] = ()
    rotation: int = 0

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
                        rgb = upright(frame.to_ndarray(format="rgb24"), self.rotation)
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
            # The display matrix (phone videos) comes with each decoded frame; the first
            # frame's stands for the video, as players take the stream's.
            rotation = quarter_rotation(first.rotation)
            height, width = first.height, first.width
            if rotation in (90, 270):
                height, width = width, height
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable video ({_first_line(err)})") from None
    if num_frames < 1:
        raise UserError(f"{path}: the video stream has no frames")
    return VideoInput(path=path, num_frames=num_frames, height=height, width=width, fps=fps,
                      rotation=rotation)


def has_glob_characters(argument: str) -> bool:
    return any(character in GLOB_CHARACTERS for character in argument)


def _is_frame_folder(path: str) -> bool:
    """Whether the folder holds frames directly (then it is one video)."""
    return any(name.lower().endswith(FRAME_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
               for name in os.listdir(path))


def _videos_in_folder(path: str) -> list[str]:
    """The videos a folder of videos holds: its video files (by extension) and its frame
    sub-folders, in natural name order."""
    found = []
    for name in sorted(os.listdir(path), key=_natural_key):
        full = os.path.join(path, name)
        if os.path.isdir(full):
            if _is_frame_folder(full):
                found.append(full)
        elif name.lower().endswith(VIDEO_EXTENSIONS):
            found.append(full)
    return found


def names_several_videos(arguments: Sequence[str]) -> bool:
    """Whether the arguments name a batch of videos (several arguments, a glob pattern or a
    folder that is not a frame folder) rather than one video file or frame folder. Checks
    nothing else (`find_videos` does) and raises nothing."""
    if len(arguments) != 1:
        return True
    argument = arguments[0]
    if not os.path.exists(argument):
        return has_glob_characters(argument)
    return os.path.isdir(argument) and not _is_frame_folder(argument)


@dataclasses.dataclass(frozen=True)
class FoundVideos:
    """What `find_videos` returns: the videos, in order, and whether the arguments named a
    batch (several arguments, a glob or a folder of videos) rather than one video."""

    paths: tuple[str, ...]
    batch: bool


def find_videos(arguments: Sequence[str]) -> FoundVideos:
    """The videos the arguments name, in order, each once.

    Each argument is one of: a video file; a frame folder (one that holds .jpg/.jpeg/.png
    files directly); a folder of videos (video files, by extension, and/or frame
    sub-folders); or a glob pattern (expanded here with `glob.glob`, sorted, so a quoted
    pattern works as well as one the shell expanded), whose matches are videos. An argument
    naming an existing path is taken literally even if it has glob characters. UserError
    for a missing path, a pattern that matches nothing, or a folder without videos.
    """
    if not arguments:
        raise UserError("no input given: name a video file, a frame folder, a folder of "
                        "videos or a glob pattern")
    paths: list[str] = []
    for argument in arguments:
        if not os.path.exists(argument) and has_glob_characters(argument):
            matches = sorted(glob.glob(argument), key=_natural_key)
            if not matches:
                raise UserError(f"{argument}: the pattern matches no file or folder")
            paths += matches
        elif not os.path.exists(argument):
            raise UserError(f"{argument}: no such video file or frame folder")
        elif os.path.isdir(argument) and not _is_frame_folder(argument):
            inside = _videos_in_folder(argument)
            if not inside:
                raise UserError(
                    f"{argument}: the folder has no videos (no {'/'.join(FRAME_EXTENSIONS)} "
                    f"frames, no video files like {'/'.join(VIDEO_EXTENSIONS[:5])}, no "
                    "frame sub-folders)")
            paths += inside
        else:
            paths.append(argument)
    unique: dict[str, str] = {}
    for path in paths:  # a file named twice (by a pattern and by name) is predicted once
        unique.setdefault(os.path.realpath(path), path)
    return FoundVideos(tuple(unique.values()), names_several_videos(arguments))
