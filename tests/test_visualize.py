"""Overlay pictures: colours, contours, blending against hand-computed pixels, GIF, MP4 and
PNGs."""

import dataclasses
import io
import os

import numpy as np
import pytest
from PIL import Image

from ifc_jax import visualize
from ifc_jax.data.masks import decode_rle, empty_rle, encode_rle


def test_track_colours_are_distinct_and_stable():
    colours = [visualize.track_colour(i) for i in range(12)]
    assert colours == [visualize.track_colour(i) for i in range(12)]
    for i in range(12):
        for j in range(i + 1, 12):
            assert sum(abs(a - b) for a, b in zip(colours[i], colours[j], strict=True)) > 30


def test_evenly_spaced_and_keyframe_names():
    assert visualize.evenly_spaced(2000, 5) == [0, 500, 1000, 1499, 1999]
    assert visualize.evenly_spaced(4, 150) == [0, 1, 2, 3]
    assert visualize.evenly_spaced(10, 0) == []
    assert visualize.evenly_spaced(10, 1) == [0]
    assert visualize.keyframe_name(7, 2000) == "keyframe_0007.png"
    assert visualize.keyframe_name(12, 20000) == "keyframe_00012.png"
    assert visualize.gif_frame_ms(2000, 150, 30.0) == 440  # 13.3 frames of 1/30 s each
    assert visualize.gif_frame_ms(10, 10, 100.0) == 20  # never under 20 ms


def test_mask_contour_of_a_rectangle():
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:10] = True
    contour = visualize.mask_contour(mask, thickness=1)
    expected = mask.copy()
    expected[3:7, 4:9] = False  # the interior one pixel in from every side
    np.testing.assert_array_equal(contour, expected)
    thick = visualize.mask_contour(mask, thickness=2)
    expected = mask.copy()
    expected[4:6, 5:8] = False
    np.testing.assert_array_equal(thick, expected)


def test_draw_overlay_blends_inside_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[30:50, 20:60] = True
    colour = (200, 40, 10)
    out = visualize.draw_overlay(frame, [(mask, colour, "disk 0.90")], alpha=0.5)
    interior = visualize.mask_contour(mask, 1) ^ mask
    blended = np.floor(0.5 * np.asarray(colour) + 0.5 * frame[interior].astype(np.float64)
                       + 0.5)
    np.testing.assert_array_equal(out[interior], blended.astype(np.uint8))
    np.testing.assert_array_equal(out[visualize.mask_contour(mask, 1)],
                                  np.broadcast_to(colour, (int(
                                      visualize.mask_contour(mask, 1).sum()), 3)))
    # The label box sits just above the mask's top-left corner; far rows are untouched.
    np.testing.assert_array_equal(out[51:], frame[51:])
    assert (out[20:30, 20:30] != frame[20:30, 20:30]).all(axis=-1).mean() > 0.5  # the label
    np.testing.assert_array_equal(out[:10], frame[:10])
    np.testing.assert_array_equal(out[:, :20], frame[:, :20])
    # An empty mask draws nothing at all.
    np.testing.assert_array_equal(
        visualize.draw_overlay(frame, [(np.zeros((60, 80), bool), colour, "x")]), frame)


def reference_overlay(frame, masks, alpha):
    """The overlay's arithmetic written out plainly: masks blended one after another in
    float32 over the whole frame, each mask's contour (pixels within `thickness` 4-steps of
    the outside or of the image border: a diamond) in its colour, then rounded."""
    height, width = frame.shape[:2]
    thickness = max(1, min(height, width) // 180)
    value = frame.astype(np.float32)
    for mask, colour, _ in masks:
        padded = np.pad(mask, thickness)  # outside the image counts as outside the mask
        interior = mask.copy()
        for dy in range(-thickness, thickness + 1):
            for dx in range(abs(dy) - thickness, thickness - abs(dy) + 1):
                interior &= padded[thickness + dy:thickness + dy + height,
                                   thickness + dx:thickness + dx + width]
        colour = np.asarray(colour, np.float32)
        blend = np.float32(1 - alpha) * value + np.float32(alpha) * colour
        value = np.where(mask[..., None], blend, value)
        value = np.where((mask & ~interior)[..., None], colour, value)
    return np.floor(value + np.float32(0.5)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("height, width", [(64, 96), (372, 360)])  # contours 1 and 2 wide
def test_draw_overlay_of_overlapping_masks_equals_the_plain_arithmetic(height, width):
    rng = np.random.default_rng(height)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    top = height // 3  # every mask starts on this row; the labels sit in the rows above
    rectangle = (rows >= top) & (rows < height - 5) & (cols >= 10) & (cols < width // 2)
    radius = height // 4
    disk = (rows - top - radius) ** 2 + (cols - width // 2) ** 2 <= radius ** 2
    noisy = (rng.random((height, width)) < 0.5) & (rows >= top)
    edge = (rows >= top) & (cols >= width - 7)  # touches the image border
    masks = [(rectangle, (200, 40, 10), "a 0.9"), (noisy, (10, 200, 40), "b 0.8"),
             (disk, (40, 10, 200), "c 0.7"), (edge, (250, 250, 0), "d 0.6")]
    for alpha in (0.5, 0.3):
        out = visualize.draw_overlay(frame, masks, alpha=alpha)
        expected = reference_overlay(frame, masks, alpha)
        np.testing.assert_array_equal(out[top:], expected[top:])
        assert (out[:top] != frame[:top]).any()  # the labels


def test_display_tracks_threshold_and_labels():
    probs = [np.array([0.1, 0.6, 0.1, 0.2]), np.array([0.25, 0.05, 0.1, 0.6]),
             np.array([0.0, 0.0, 0.3, 0.7])]
    segmentations = [[empty_rle(4, 5)] * 2] * 3
    tracks = visualize.display_tracks(probs, segmentations, ["disk", "square", "cross"], 0.3)
    assert [(t.track_index, t.label) for t in tracks] == [(0, "square 0.60"), (2, "cross 0.30")]
    assert tracks[1].colour == visualize.track_colour(2)


def moving_box_track(num_frames, height, width, step):
    """Grey frames and a track whose 20x20 box moves `step` pixels right per frame."""
    frames = np.full((num_frames, height, width, 3), 90, np.uint8)
    masks = np.zeros((num_frames, height, width), bool)
    for t in range(num_frames):
        masks[t, 10:30, 5 + step * t: 25 + step * t] = True
    track = visualize.DisplayTrack(0, "disk 0.80", 0.8, (255, 0, 0),
                                   [encode_rle(m) for m in masks])
    return frames, masks, track


def test_render_frame_draws_the_tracks_present_and_checks_every_size():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    masks = [np.zeros((30, 40), bool) for _ in range(4)]
    masks[1][5:20, 3:30] = True
    masks[3][10:25, 20:38] = True  # tracks 0 and 2 are absent from this frame
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]
    tracks = [visualize.DisplayTrack(i, f"t{i} 0.9", 0.9, colours[i], [encode_rle(m)])
              for i, m in enumerate(masks)]
    expected = visualize.draw_overlay(frame, [(m, colours[i], f"t{i} 0.9")
                                              for i, m in enumerate(masks)])
    np.testing.assert_array_equal(visualize.render_frame(frame, 0, tracks), expected)
    # Uncompressed counts (a list) are decoded as they are.
    listed = dataclasses.replace(tracks[2], segmentations=[{"size": [30, 40],
                                                            "counts": [1200]}])
    np.testing.assert_array_equal(
        visualize.render_frame(frame, 0, [*tracks[:2], listed, tracks[3]]), expected)
    # An absent track's empty mask of the wrong size is an error all the same.
    wrong = dataclasses.replace(tracks[0], segmentations=[empty_rle(30, 41)])
    with pytest.raises(ValueError, match=r"mask \(30, 41\) does not fit frame \(30, 40\)"):
        visualize.render_frame(frame, 0, [wrong, *tracks[1:]])


def test_write_overlays_gif_and_keyframes(tmp_path):
    num_frames, height, width = 9, 48, 64
    frames, masks, track = moving_box_track(num_frames, height, width, step=3)
    np.testing.assert_array_equal(decode_rle(track.segmentations[4]), masks[4])
    gif_indices, key_indices = visualize.overlay_frame_indices(num_frames, 5, 2)
    assert (gif_indices, key_indices) == ([0, 2, 4, 6, 8], [0, 8])
    written = visualize.write_overlays(
        ((t, frames[t]) for t in range(num_frames)), [track], str(tmp_path), gif_indices,
        key_indices, num_frames=num_frames, fps=10.0, max_side=32)
    assert written["gif"] == os.path.join(str(tmp_path), "overlay.gif")
    with Image.open(written["gif"]) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (32, 24)
        assert gif.info["duration"] == 180  # 9 frames / 5 GIF frames at 10 fps
    assert [os.path.basename(p) for p in written["keyframes"]] == [
        "keyframe_0000.png", "keyframe_0008.png"]
    with Image.open(written["keyframes"][1]) as png:
        assert png.format == "PNG" and png.size == (width, height)
        key = np.asarray(png.convert("RGB"))
    expected = visualize.render_frame(frames[8], 8, [track])
    np.testing.assert_array_equal(key, expected)
    assert key[20, 40, 0] > key[20, 40, 1]  # inside the frame-8 mask: reddened
    assert sorted(os.listdir(tmp_path)) == ["keyframe_0000.png", "keyframe_0008.png",
                                            "overlay.gif"]  # no temp files left


def test_encode_png_round_trip():
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(visualize.encode_png(image)))), image)


def decode_mp4(path):
    """(frames (N, H, W, 3) uint8, average frame rate, codec name) of an MP4 (PyAV)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24")
                           for frame in container.decode(stream)])
        return frames, float(stream.average_rate), stream.codec_context.name


def test_write_overlays_mp4_and_frame_pngs_odd_size(tmp_path):
    num_frames, height, width = 6, 47, 63  # odd: the MP4 is padded to 48x64
    frames, masks, track = moving_box_track(num_frames, height, width, step=4)
    frames_dir = str(tmp_path / "frames")
    written = visualize.write_overlays(
        ((t, frames[t]) for t in range(num_frames)), [track], str(tmp_path), [0, 5], [],
        num_frames=num_frames, fps=12.5, mp4_name="overlay.mp4", frames_dir=frames_dir)
    assert written["mp4"] == os.path.join(str(tmp_path), "overlay.mp4")
    assert written["frame_pngs"] == num_frames and written["frames_dir"] == frames_dir
    decoded, rate, codec = decode_mp4(written["mp4"])
    assert decoded.shape == (num_frames, 48, 64, 3) and rate == 12.5
    assert codec == ("h264" if visualize.mp4_codec() == "libx264" else "mpeg4")
    for t in range(num_frames):
        expected = visualize.render_frame(frames[t], t, [track])
        # Lossy (4:2:0 chroma smears the red edges and the label on so small a frame): close
        # to the drawn frame.
        assert np.abs(decoded[t, :height, :width].astype(np.int16) - expected).mean() < 10.0
        assert decoded[t, 20, 15 + 4 * t, 0] > decoded[t, 20, 15 + 4 * t, 1] + 60  # red mask
        with Image.open(os.path.join(frames_dir, f"frame_{t:04d}.png")) as png:
            np.testing.assert_array_equal(np.asarray(png.convert("RGB")), expected)
    assert sorted(os.listdir(tmp_path)) == ["frames", "overlay.gif", "overlay.mp4"]


@pytest.mark.parametrize("threads", [1, 3])
def test_write_overlays_mp4_needs_every_frame_and_leaves_no_file(tmp_path, threads):
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    track = visualize.DisplayTrack(0, "x 0.9", 0.9, (0, 255, 0),
                                   [empty_rle(16, 16)] * 4)
    with pytest.raises(ValueError, match="frame 1 missing"):
        visualize.write_overlays(((t, frames[t]) for t in (0, 2, 3)), [track], str(tmp_path),
                                 [], [], num_frames=4, fps=10.0, mp4_name="overlay.mp4",
                                 threads=threads)
    assert os.listdir(tmp_path) == []  # the temp MP4 is removed


def test_write_overlays_on_threads_writes_the_same_files(tmp_path):
    num_frames, height, width = 11, 40, 54
    frames, _, track = moving_box_track(num_frames, height, width, step=3)
    contents = []
    for threads in (1, 4):
        folder = tmp_path / str(threads)
        (folder / "frames").mkdir(parents=True)
        written = visualize.write_overlays(
            ((t, frames[t]) for t in range(num_frames)), [track], str(folder), [0, 5, 10],
            [0, 10], num_frames=num_frames, fps=10.0, max_side=32, mp4_name="overlay.mp4",
            frames_dir=str(folder / "frames"), threads=threads)
        assert written["frame_pngs"] == num_frames and len(written["keyframes"]) == 2
        contents.append({str(path.relative_to(folder)): path.read_bytes()
                         for path in sorted(folder.rglob("*")) if path.is_file()})
    assert len(contents[0]) == 1 + 1 + 2 + num_frames  # GIF, MP4, keyframes, frame PNGs
    # libx264 itself does not encode the same frames to the same bytes twice (even on one
    # thread): the MP4s are compared by what they show, every other file byte for byte.
    for folder in ("1", "4"):
        decoded, _, _ = decode_mp4(str(tmp_path / folder / "overlay.mp4"))
        for t in range(num_frames):
            expected = visualize.render_frame(frames[t], t, [track])
            assert np.abs(decoded[t].astype(np.int16) - expected).mean() < 10.0
    assert contents[0].pop("overlay.mp4") != b"" and contents[1].pop("overlay.mp4") != b""
    assert contents[0] == contents[1]
    # A frame that fails to draw (its mask does not fit) stops the run with the error; the
    # MP4 is not left behind.
    bad = dataclasses.replace(track, segmentations=[
        *track.segmentations[:7], empty_rle(height + 1, width), *track.segmentations[8:]])
    with pytest.raises(ValueError, match="does not fit"):
        visualize.write_overlays(((t, frames[t]) for t in range(num_frames)), [bad],
                                 str(tmp_path), [], [], num_frames=num_frames, fps=10.0,
                                 mp4_name="late.mp4", threads=4)
    assert not [name for name in os.listdir(tmp_path) if "late" in name]


def test_even_size_pads_by_repeating_the_edge():
    frame = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    padded = visualize.even_size(frame)
    assert padded.shape == (4, 6, 3)
    np.testing.assert_array_equal(padded[:3, :5], frame)
    np.testing.assert_array_equal(padded[3, :5], frame[2])
    np.testing.assert_array_equal(padded[:3, 5], frame[:, 4])
    even = np.zeros((4, 6, 3), np.uint8)
    assert visualize.even_size(even) is even


def test_mp4_writer_mpeg4_fallback_at_ntsc_rate(tmp_path, monkeypatch):
    # Where PyAV's FFmpeg lacks libx264, FFmpeg's own MPEG-4 Part 2 encoder writes the MP4.
    monkeypatch.setattr(visualize, "mp4_codec", lambda: "mpeg4")
    path = str(tmp_path / "overlay.mp4")
    frames = np.random.default_rng(0).integers(0, 256, (3, 21, 33, 3), dtype=np.uint8)
    with visualize.mp4_writer(path, 30000 / 1001) as write:
        for frame in frames:
            write(frame)
    decoded, rate, codec = decode_mp4(path)
    assert codec == "mpeg4" and decoded.shape == (3, 22, 34, 3)
    assert abs(rate - 29.97) < 0.01
    assert os.listdir(tmp_path) == ["overlay.mp4"]
