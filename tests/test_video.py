"""Reading videos to predict on: frame folders, video files (PyAV), and bad input."""

import os

import numpy as np
import pytest
from PIL import Image

from ifc_jax.benchmarks.inference import synthetic_frames, write_synthetic_video
from ifc_jax.data.clips import load_eval_video
from ifc_jax.data.ytvis import Video
from ifc_jax.inference.video import inference_size, open_video
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
