"""Reading videos to predict on: frame folders, video files (PyAV), rotation metadata,
finding the videos of several arguments, and bad input."""

import os

import numpy as np
import pytest
from PIL import Image

from ifc_jax.benchmarks.inference import synthetic_frames, write_synthetic_video
from ifc_jax.data.clips import load_eval_video
from ifc_jax.data.ytvis import Video
from ifc_jax.inference.video import (
    FoundVideos,
    find_videos,
    inference_size,
    names_several_videos,
    open_video,
    quarter_rotation,
    upright,
)
from ifc_jax.io import UserError


def write_frame_folder(folder, frames, names=None, extension="png"):
    os.makedirs(folder, exist_ok=True)
    names = names or [f"{i:05d}.{extension}" for i in range(len(frames))]
    for name, frame in zip(names, frames, strict=True):
        Image.fromarray(frame).save(os.path.join(folder, name))
    return [os.path.join(folder, name) for name in names]


def test_frame_folder_natural_order_and_resize_matches_evaluation(tmp_path):
    frames = list(synthetic_frames(12, 96, 144, seed=3))
    # Unpadded numbers: plain sorting would put frame_10 before frame_2.
    names = [f"frame_{i}.png" for i in range(12)]
    paths = write_frame_folder(tmp_path / "clip", frames, names)
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    os.makedirs(tmp_path / "clip" / "sub.png")  # a folder named like a frame is skipped

    video = open_video(str(tmp_path / "clip"), folder_fps=12.5)
    assert (video.num_frames, video.height, video.width, video.fps) == (12, 96, 144, 12.5)
    assert list(video.frame_paths) == paths
    for got, expected in zip(video.frames(), frames, strict=True):
        np.testing.assert_array_equal(got, expected)  # PNG is lossless

    # The same resize as evaluation, compared with load_eval_video on the same files.
    reference = load_eval_video(
        Video(video_id=1, height=96, width=144, file_names=tuple(names),
              frame_paths=tuple(paths)), short_side=64, max_size=128)
    height, width = inference_size(96, 144, 64, 128)
    assert (height, width) == (reference["height"], reference["width"]) == (64, 96)
    resized = np.stack(list(video.resized_frames(height, width)))
    np.testing.assert_array_equal(resized, reference["frames"])
    # A size where PIL really resamples on both axes.
    assert inference_size(100, 170, 64, 1333) == (64, 109)

    picked = list(video.frames_at([7, 0, 7, 11]))
    assert [index for index, _ in picked] == [0, 7, 11]
    np.testing.assert_array_equal(picked[1][1], frames[7])


def test_video_file_frames_count_and_content(tmp_path):
    path = str(tmp_path / "clip.mp4")
    write_synthetic_video(path, 17, 96, 144, fps=25, seed=1)
    video = open_video(path)
    assert (video.num_frames, video.height, video.width, video.fps) == (17, 96, 144, 25.0)
    assert not video.is_frame_folder
    decoded = np.stack(list(video.frames()))
    source = np.stack(list(synthetic_frames(17, 96, 144, seed=1)))
    assert decoded.shape == source.shape and decoded.dtype == np.uint8
    # H.264 + 4:2:0 chroma is lossy: close to the source, in the right order.
    error = np.abs(decoded.astype(np.int16) - source).mean(axis=(1, 2, 3))
    assert error.max() < 8.0, error
    shifted = np.abs(decoded[1:].astype(np.int16) - source[:-1]).mean()
    assert shifted > error.mean() + 1.0

    picked = list(video.frames_at([16, 3]))
    assert [index for index, _ in picked] == [3, 16]
    np.testing.assert_array_equal(picked[0][1], decoded[3])
    np.testing.assert_array_equal(picked[1][1], decoded[16])
    resized = list(video.resized_frames(64, 96))
    assert len(resized) == 17 and resized[0].shape == (64, 96, 3)


@pytest.mark.parametrize("case", ["garbage", "empty_file", "empty_folder", "missing",
                                  "no_frames", "mixed_sizes", "broken_frame"])
def test_bad_input_is_one_user_error_naming_the_file(tmp_path, case):
    frames = list(synthetic_frames(3, 32, 48))
    if case == "garbage":
        target = tmp_path / "video.mp4"
        target.write_bytes(np.random.default_rng(0).bytes(4096))
        named = str(target)
    elif case == "empty_file":
        target = tmp_path / "video.mp4"
        target.write_bytes(b"")
        named = str(target)
    elif case == "empty_folder":
        target = tmp_path / "frames"
        target.mkdir()
        named = str(target)
    elif case == "missing":
        target = tmp_path / "nope.mp4"
        named = str(target)
    elif case == "no_frames":
        target = tmp_path / "frames"
        target.mkdir()
        (target / "a.txt").write_text("x")
        named = str(target)
    elif case == "mixed_sizes":
        target = tmp_path / "frames"
        write_frame_folder(target, frames[:2])
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(target / "00002.png")
        named = str(target / "00002.png")
    else:  # broken_frame
        target = tmp_path / "frames"
        write_frame_folder(target, frames[:2], extension="jpg")
        (target / "00002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        named = str(target / "00002.jpg")
    with pytest.raises(UserError) as error:
        open_video(str(target))
    message = str(error.value)
    assert named in message and "\n" not in message


def write_rotated_video(path, upright_frames, rotation, fps=10):
    """An H.264 mp4 whose stored frames are `upright_frames` turned against `rotation` (the
    degrees counterclockwise a player turns them back, FFmpeg's display matrix convention),
    with that rotation in the stream's display matrix: what a phone records."""
    import av

    stored = [np.ascontiguousarray(np.rot90(frame, -(rotation // 90))) for frame in upright_frames]
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(rotation)
        for frame in stored:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return stored


def marked_frames(num_frames, height, width, seed=0):
    """synthetic_frames with a white block in the top-left corner: no turn or flip of a frame
    looks like the frame."""
    frames = list(synthetic_frames(num_frames, height, width, seed=seed))
    for frame in frames:
        frame[:16, :16] = 255
    return frames


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotated_video_comes_upright(tmp_path, rotation):
    upright_frames = marked_frames(5, 64, 96, seed=2)  # as a player shows them: 96x64 (WxH)
    path = str(tmp_path / "phone.mp4")
    stored = write_rotated_video(path, upright_frames, rotation)
    if rotation != 180:
        assert stored[0].shape[:2] == (96, 64)  # stored sideways

    # PyAV reads the display matrix back as written (the test's premise).
    import av

    with av.open(path) as container:
        assert next(container.decode(video=0)).rotation % 360 == rotation % 360

    video = open_video(path)
    assert (video.height, video.width, video.rotation) == (64, 96, rotation % 360)
    decoded = np.stack(list(video.frames()))
    assert decoded.shape == (5, 64, 96, 3)
    error = np.abs(decoded.astype(np.int16) - np.stack(upright_frames)).mean()
    assert error < 8.0
    assert decoded[:, :16, :16].min() > 200  # the marker is top-left, as shown
    # The other orientations of the same size are far off.
    turned = np.stack([np.rot90(frame, 2) for frame in upright_frames])
    assert np.abs(decoded.astype(np.int16) - turned).mean() > error + 10.0
    picked = dict(video.frames_at([4, 1]))
    np.testing.assert_array_equal(picked[4], decoded[4])
    assert next(video.resized_frames(32, 48)).shape == (32, 48, 3)


def test_upright_and_quarter_rotation():
    frame = np.arange(6).reshape(2, 3, 1)
    assert upright(frame, 0) is frame
    np.testing.assert_array_equal(upright(frame, 90)[:, :, 0], [[2, 5], [1, 4], [0, 3]])
    np.testing.assert_array_equal(upright(frame, 270), upright(frame, -90))
    np.testing.assert_array_equal(upright(frame, 180)[:, :, 0], [[5, 4, 3], [2, 1, 0]])
    assert [quarter_rotation(d) for d in (0, 89.6, -90, 180, -180, 271, 44)] == [
        0, 90, 270, 180, 180, 270, 0]


def test_find_videos_files_folders_and_patterns(tmp_path):
    videos = tmp_path / "videos"
    write_frame_folder(videos / "walk_2", list(synthetic_frames(2, 32, 48)))
    write_frame_folder(videos / "walk_10", list(synthetic_frames(2, 32, 48)))
    (videos / "b.mp4").write_bytes(b"x")
    (videos / "A.MOV").write_bytes(b"x")
    (videos / "notes.txt").write_text("not a video")
    os.makedirs(videos / "empty")
    single = tmp_path / "single.mp4"
    single.write_bytes(b"x")

    found = find_videos([str(videos)])
    assert found.batch
    assert found.paths == tuple(str(videos / name)
                                for name in ["A.MOV", "b.mp4", "walk_2", "walk_10"])
    # A frame folder or a file alone is one video; a pattern (quoted: expanded here) a batch.
    assert find_videos([str(videos / "walk_2")]) == FoundVideos((str(videos / "walk_2"),), False)
    assert find_videos([str(single)]) == FoundVideos((str(single),), False)
    found = find_videos([str(videos / "walk_*"), str(single), str(videos / "walk_2")])
    assert found.batch and found.paths == (str(videos / "walk_2"), str(videos / "walk_10"),
                                           str(single))  # walk_2 once
    assert names_several_videos([str(tmp_path / "*.mp4")])
    assert not names_several_videos([str(single)])
    assert names_several_videos([str(videos)])


@pytest.mark.parametrize("case", ["no_match", "no_videos", "missing_among_several"])
def test_find_videos_bad_input(tmp_path, case):
    (tmp_path / "a.mp4").write_bytes(b"x")
    if case == "no_match":
        arguments, named = [str(tmp_path / "*.mkv")], str(tmp_path / "*.mkv")
    elif case == "no_videos":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "readme.txt").write_text("x")
        arguments, named = [str(tmp_path / "docs")], str(tmp_path / "docs")
    else:
        arguments, named = [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")], str(
            tmp_path / "b.mp4")
    with pytest.raises(UserError) as error:
        find_videos(arguments)
    assert named in str(error.value) and "\n" not in str(error.value)
