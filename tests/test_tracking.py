"""Clip tracking (docs/inference.md#windows, #merging-windows): identities across overlapping
windows, against a dense
reference written here from the spec text, bounded memory on long videos, > 50 tracks, and
the stride-8 crop + bilinear upsampling rule against jax.image.resize."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from ifc_jax.inference.tracking import (
    ClipTracker,
    StrideEightUpsampler,
    bilinear_resize,
    bilinear_taps,
    hungarian_matches,
    keep_object_queries,
    kept_query_mask,
    sigmoid,
    soft_iou,
    stride8_valid_size,
)

NUM_CLASSES = 4  # K; index K is "no object"
GRID = (12, 16)  # stride-8 grid (h8, w8)


def window_starts(length, window, stride):
    """docs/inference.md#windows: starts 0, S, 2S, ...; the window reaching the end is
    right-aligned, last."""
    starts = []
    for start in range(0, length, stride):
        if start + window >= length:
            starts.append(max(0, length - window))
            break
        starts.append(start)
    return starts


def box_mask(box, grid=GRID):
    """box = (y0, x0, y1, x1) in grid cells, or None (absent) -> bool (h8, w8)."""
    mask = np.zeros(grid, bool)
    if box is not None:
        y0, x0, y1, x1 = box
        mask[y0:y1, x0:x1] = True
    return mask


def class_probs_for(label, rng, confidence=3.0):
    logits = rng.normal(0, 0.3, NUM_CLASSES + 1)
    logits[label] += confidence
    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


def synthetic_windows(objects, length, window, stride, rng, noise=0.5, missed=(),
                      shuffle=True, spurious=0):
    """Windows of a synthetic model: one kept instance per object visible in the window.

    objects: list of (label, boxes) with boxes[t] a grid box or None (absent in frame t).
    missed: (window index, object index) pairs the "model" fails to detect.
    spurious: extra queries per window whose arg-max is no-object (dropped by selection).
    Returns [(start, class_probs (N, K+1), mask_logits (N, T', h8, w8))] with all queries.
    """
    out = []
    for w_index, start in enumerate(window_starts(length, window, stride)):
        frames = range(start, min(start + window, length))
        probs, logits = [], []
        for o_index, (label, boxes) in enumerate(objects):
            if all(boxes[t] is None for t in frames) or (w_index, o_index) in missed:
                continue
            masks = np.stack([box_mask(boxes[t]) for t in frames])
            logits.append(np.where(masks, 4.0, -8.0) + rng.normal(0, noise, masks.shape))
            probs.append(class_probs_for(label, rng))
        for _ in range(spurious):
            logits.append(rng.normal(-2, 1, (len(frames), *GRID)))
            probs.append(class_probs_for(NUM_CLASSES, rng))
        order = rng.permutation(len(probs)) if shuffle else np.arange(len(probs))
        probs = np.array(probs).reshape(-1, NUM_CLASSES + 1)
        logits = np.array(logits, np.float32).reshape(-1, len(frames), *GRID)
        out.append((start, probs[order], logits[order]))
    return out


def run_tracker(windows, length, callback=None):
    tracker = ClipTracker(length, 0.05, on_final_frame=callback)
    for start, probs, logits in windows:
        tracker.add_window(start, *keep_object_queries(probs, logits))
    return tracker.finish()


def track_masks(track, length):
    """(L, h8, w8) bool masks of a finished track (collect mode), empty where not covered."""
    return np.stack([track.frame_logits[t] > 0 if t in track.frame_logits
                     else np.zeros(GRID, bool) for t in range(length)])


def assign_objects(tracks, objects, length):
    """For each track, the object whose masks it matches exactly, or None."""
    names = []
    for track in tracks:
        masks = track_masks(track, length)
        hits = [o for o, (_, boxes) in enumerate(objects)
                if all(np.array_equal(masks[t], box_mask(boxes[t])) for t in range(length))]
        names.append(hits[0] if len(hits) == 1 else None)
    return names


def moving_box(length, y0, x0, dy, dx, size=(3, 3), visible=None):
    boxes = []
    for t in range(length):
        y, x = y0 + round(dy * t), x0 + round(dx * t)
        box = (max(y, 0), max(x, 0), min(y + size[0], GRID[0]), min(x + size[1], GRID[1]))
        ok = box[0] < box[2] and box[1] < box[3] and (visible is None or visible(t))
        boxes.append(box if ok else None)
    return boxes


# ============================================================================ the reference

def reference_tracking(windows, length):
    """docs/inference.md#merging-windows with dense full-video buffers per (window, track), no
    cap, plain loops.

    Returns (assignments: per window the track id of each kept instance, mean logits per
    track (L, h8, w8) with NaN where no window, class probs per track)."""
    saved = []  # per window: {track: (logits (L,h,w), probs (L,h,w), valid (L,) bool, cls)}
    seen, num_tracks, assignments = set(), 0, []
    for new_index, (start, probs_all, logits_all) in enumerate(windows):
        keep = [q for q in range(len(probs_all))
                if np.argmax(probs_all[q]) != NUM_CLASSES]
        cls, logits = probs_all[keep], logits_all[keep].astype(np.float32)
        probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
        span = logits.shape[1]
        frames = list(range(start, start + span))
        overlap = [f for f in frames if f in seen]
        previous = range(max(0, new_index - span), new_index)
        scores = np.zeros((num_tracks, len(keep)))
        for s in range(num_tracks):
            for i in range(len(keep)):
                total, count = 0.0, 0
                for c in previous:
                    if s not in saved[c]:
                        continue
                    s_probs, valid = saved[c][s][1], saved[c][s][2]
                    valid_frames = [f for f in overlap if valid[f]]
                    if valid_frames:
                        count += 1
                    num = den = 0.0
                    for f in valid_frames:
                        a = s_probs[f].astype(np.float64)
                        b = probs[i, f - start].astype(np.float64)
                        num += float((a * b).sum())
                        den += float((a + b - a * b).sum())
                    total += num / (den + 1e-6)
                scores[s, i] = total / (count + 1e-6)
        scores[scores <= 0.05] = 0.0
        rows, cols = linear_sum_assignment(scores, maximize=True)
        owner = {int(c): int(r) for r, c in zip(rows, cols, strict=True) if scores[r, c] > 0.05}
        record, ids = {}, []
        for i in range(len(keep)):
            if i not in owner:
                owner[i] = num_tracks
                num_tracks += 1
            full_logits = np.zeros((length, *GRID))
            full_probs = np.zeros((length, *GRID), np.float32)
            valid = np.zeros(length, bool)
            full_logits[start:start + span] = logits[i]
            full_probs[start:start + span] = probs[i]
            valid[start:start + span] = True
            record[owner[i]] = (full_logits, full_probs, valid, cls[i])
            ids.append(owner[i])
        saved.append(record)
        assignments.append(ids)
        seen.update(frames)
    means, class_means = [], []
    for s in range(num_tracks):
        sums = sum(r[s][0] for r in saved if s in r)
        counts = sum(r[s][2].astype(float) for r in saved if s in r)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(sums / counts[:, None, None])
        class_means.append(sum(r[s][3] for r in saved if s in r)
                           / sum(1 for r in saved if s in r))
    return assignments, means, class_means


# ============================================================================ tests

def test_kept_queries_are_those_whose_argmax_is_not_no_object():
    probs = np.array([[0.6, 0.1, 0.3], [0.2, 0.3, 0.5], [0.1, 0.45, 0.45], [0.0, 0.0, 1.0]])
    # Ties go to the first index (np.argmax, like torch.max on CPU): query 2 is kept.
    assert kept_query_mask(probs).tolist() == [True, False, True, False]
    logits = np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3)
    kept_probs, kept_logits = keep_object_queries(probs, logits)
    np.testing.assert_array_equal(kept_probs, probs[[0, 2]])
    np.testing.assert_array_equal(kept_logits, logits[[0, 2]])


def test_sigmoid_matches_scipy_expit_in_float32():
    from scipy.special import expit

    x = np.concatenate([np.linspace(-120, 120, 20001), [-1e30, 0.0, 1e30]]).astype(np.float32)
    got = sigmoid(x)
    assert got.dtype == np.float32
    # Relative to float32 rounding, down to the smallest normal float32 (below it, about
    # x < -87, float32 has no relative precision to keep).
    np.testing.assert_allclose(got, expit(x.astype(np.float64)), rtol=1e-6,
                               atol=float(np.finfo(np.float32).tiny))
    assert got[-3] == 0.0 and got[-2] == 0.5 and got[-1] == 1.0
    assert not np.shares_memory(got, x)  # the input is left as it was


def test_soft_iou_sums_over_time_and_space():
    # Two shared frames of 4 cells. Track: frame 0 [1, 1, 0, 0], frame 1 [1, 0, 0, 0].
    # Instance: frame 0 [1, .5, 0, 0], frame 1 [1, 1, 1, 1].
    # Intersection = (1 + .5) + 1 = 2.5; union = (2 + 1.5 - 1.5) + (1 + 4 - 1) = 6:
    # 2.5 / (6 + 1e-6). (The mean of per-frame IoUs would be (.75 + .25) / 2 = .5.)
    track = np.array([[[[1, 1, 0, 0]], [[1, 0, 0, 0]]]], float)
    instance = np.array([[[[1, .5, 0, 0]], [[1, 1, 1, 1]]]], float)
    np.testing.assert_allclose(soft_iou(track, instance), [[2.5 / (6 + 1e-6)]], rtol=1e-15)
    assert soft_iou(np.zeros((2, 1, 1, 3)), np.zeros((3, 1, 1, 3))).shape == (2, 3)


def test_hungarian_matches_zero_low_scores_first():
    # Unzeroed, (0, 0) + (1, 1) = 0.94 would win over (0, 1) = 0.91; zeroing 0.04 first
    # makes (0, 1) the assignment, and (1, 0) (score 0) is not a match.
    scores = np.array([[0.90, 0.91], [0.0, 0.04]])
    assert hungarian_matches(scores, 0.05) == [(0, 1)]
    assert hungarian_matches(np.array([[0.05, 0.051]]), 0.05) == [(0, 1)]
    assert hungarian_matches(np.zeros((0, 3)), 0.05) == []


@pytest.mark.parametrize("cells,expected_tracks", [(25, 2), (10, 1)])
def test_scores_are_averaged_over_windows(cells, expected_tracks):
    # T = 3, windows [0,3), [1,4), [2,5) on a 1 x 25 grid. X = cell 0 only, in windows 0
    # and 1 (one track). Y in window 2 covers `cells` cells. Its soft IoU with X is
    # 1/cells on frame 2 (window 0) and 2/(2 cells) on frames 2-3 (window 1): averaged
    # 1/cells. 25 cells: 0.04 <= 0.05, a new track (summed it would be 0.08, a match);
    # 10 cells: 0.1, the same track.
    big = 40.0
    one_hot = np.full((3, 1, 25), -big, np.float32)
    one_hot[:, 0, 0] = big
    wide = np.full((3, 1, 25), -big, np.float32)
    wide[:, 0, :cells] = big
    probs = np.array([[0.9, 0.1]])
    tracker = ClipTracker(5, 0.05)
    tracker.add_window(0, probs, one_hot[None])
    tracker.add_window(1, probs, one_hot[None])
    tracker.add_window(2, probs, wide[None])
    assert len(tracker.finish()) == expected_tracks


def test_same_object_in_overlapping_windows_keeps_one_identity():
    rng = np.random.default_rng(0)
    length = 20
    objects = [(1, moving_box(length, 2, 1, 0.2, 0.5))]
    tracks = run_tracker(synthetic_windows(objects, length, 5, 1, rng, spurious=3), length)
    assert len(tracks) == 1
    assert assign_objects(tracks, objects, length) == [0]
    assert tracks[0].num_windows == len(window_starts(length, 5, 1))
    assert np.argmax(tracks[0].class_probs) == 1


def test_two_crossing_objects_keep_their_identities():
    # Object 0 moves right, object 1 moves left along overlapping rows; they overlap in the
    # middle frames. Query order is shuffled in every window.
    rng = np.random.default_rng(1)
    length = 24
    objects = [(0, moving_box(length, 3, 0, 0.0, 0.55, size=(4, 4))),
               (2, moving_box(length, 5, 12, 0.0, -0.55, size=(4, 4)))]
    crossing = [t for t in range(length)
                if (box_mask(objects[0][1][t]) & box_mask(objects[1][1][t])).any()]
    assert crossing, "the objects must actually overlap in some frames"
    tracks = run_tracker(synthetic_windows(objects, length, 5, 1, rng), length)
    assert len(tracks) == 2
    names = assign_objects(tracks, objects, length)
    assert sorted(names) == [0, 1]
    for track, name in zip(tracks, names, strict=True):
        assert np.argmax(track.class_probs) == objects[name][0]


def test_track_absent_for_some_frames_comes_back():
    rng = np.random.default_rng(2)
    length = 30
    # Invisible in frames 12..14 (every window still sees it somewhere), and missed by the
    # model in the two windows starting at 20 and 21: the windows before still carry it.
    objects = [(3, moving_box(length, 4, 2, 0.1, 0.3, visible=lambda t: not 12 <= t <= 14))]
    windows = synthetic_windows(objects, length, 5, 1, rng, missed={(20, 0), (21, 0)})
    tracks = run_tracker(windows, length)
    assert len(tracks) == 1
    masks = track_masks(tracks[0], length)
    assert not masks[12:15].any()
    assert assign_objects(tracks, objects, length) == [0]


def test_gap_longer_than_the_overlap_starts_a_new_track():
    # Near-online tracking only looks at the previous T' windows: after 8 invisible frames
    # (T = 5) nothing overlaps any more, so the object returns as a new track.
    rng = np.random.default_rng(3)
    length = 30
    objects = [(1, moving_box(length, 4, 4, 0, 0, visible=lambda t: not 10 <= t <= 17))]
    tracks = run_tracker(synthetic_windows(objects, length, 5, 1, rng), length)
    assert len(tracks) == 2
    first, second = (track_masks(t, length) for t in tracks)
    assert first[:10].any(axis=(1, 2)).all()
    assert not first[10:].any() and not second[:18].any() and second[18:].any(axis=(1, 2)).all()


@pytest.mark.parametrize("seed,window,stride,length", [
    (0, 5, 1, 23), (1, 5, 2, 17), (2, 3, 1, 12), (3, 5, 3, 16), (4, 6, 1, 4), (5, 4, 4, 13)])
def test_matches_dense_reference(seed, window, stride, length):
    rng = np.random.default_rng(seed)
    objects = []
    for _ in range(4):  # objects appear and vanish at random times, some overlap
        on, off = sorted(rng.integers(0, length + 1, 2))
        objects.append((int(rng.integers(0, NUM_CLASSES)), moving_box(
            length, int(rng.integers(0, 9)), int(rng.integers(0, 13)), rng.normal(0, 0.3),
            rng.normal(0, 0.5), visible=lambda t, on=on, off=off: on <= t <= off)))
    missed = {(int(rng.integers(0, 8)), int(rng.integers(0, 4))) for _ in range(3)}
    windows = synthetic_windows(objects, length, window, stride, rng, noise=2.0,
                                missed=missed, spurious=2)
    tracks = run_tracker(windows, length)
    _, ref_means, ref_classes = reference_tracking(windows, length)
    assert len(tracks) == len(ref_means) > 0
    for track, ref_mean, ref_class in zip(tracks, ref_means, ref_classes, strict=True):
        covered = sorted(np.flatnonzero(~np.isnan(ref_mean[:, 0, 0])))
        assert sorted(track.frame_logits) == covered
        for t in covered:
            np.testing.assert_allclose(track.frame_logits[t], ref_mean[t], rtol=0, atol=1e-5)
        np.testing.assert_allclose(track.class_probs, ref_class, rtol=0, atol=1e-12)


@pytest.mark.parametrize("window,stride,length", [
    (6, 6, 20), (5, 7, 19), (6, 3, 17), (5, 1, 9), (8, 8, 8), (9, 9, 4)])
def test_window_callback_and_frame_callback_give_each_mean_once(window, stride, length):
    # Windows that share no frame with an earlier one go out whole (on_final_window); the
    # others frame by frame. Together: every covered (track, frame) once, at the reference's
    # mean; a frame that only one window covers is that window's logit, bit for bit.
    rng = np.random.default_rng(window * 100 + stride)
    objects = [(label, moving_box(length, int(rng.integers(0, 9)), int(rng.integers(0, 13)),
                                  rng.normal(0, 0.3), rng.normal(0, 0.5)))
               for label in range(3)]
    windows = synthetic_windows(objects, length, window, stride, rng, noise=2.0, spurious=1)
    frames, blocks = {}, []

    def record(track_id, frame, mean):
        assert (track_id, frame) not in frames
        frames[track_id, frame] = mean.copy()

    def on_frame(track_id, frame, mean):
        assert mean.dtype == np.float64
        record(track_id, frame, mean)

    def on_window(track_ids, start, means):
        # float32: the window's own logits, which are its frames' means exactly.
        assert means.dtype == np.float32 and means.shape[:2] == (len(track_ids), min(
            window, length - start))
        blocks.append(start)
        for track_id, track_means in zip(track_ids, means, strict=True):
            for offset, mean in enumerate(track_means):
                record(track_id, start + offset, mean)

    tracker = ClipTracker(length, 0.05, on_final_frame=on_frame, on_final_window=on_window)
    covers = {}
    for start, probs, logits in windows:
        kept_probs, kept_logits = keep_object_queries(probs, logits)
        tracker.add_window(start, kept_probs, kept_logits)
        for offset in range(kept_logits.shape[1]):
            covers.setdefault(start + offset, []).append(kept_logits[:, offset])
    tracks = tracker.finish()
    _, ref_means, ref_classes = reference_tracking(windows, length)
    assert len(tracks) == len(ref_means) > 0
    covered = {(track, t) for track, mean in enumerate(ref_means)
               for t in np.flatnonzero(~np.isnan(mean[:, 0, 0]))}
    assert set(frames) == covered
    for (track, t), mean in frames.items():
        np.testing.assert_allclose(mean, ref_means[track][t], rtol=0, atol=1e-5)
        if len(covers[t]) == 1:  # one window only: its float32 logit, exactly
            assert any(np.array_equal(mean, logit.astype(np.float64)) for logit in covers[t][0])
    # Windows go out whole exactly when no other window shares their frames.
    spans = [set(range(start, start + logits.shape[1])) for start, _, logits in windows]
    alone = [start for index, (start, probs, _) in enumerate(windows)
             if kept_query_mask(probs).any()
             and not any(spans[index] & other for other in spans[:index] + spans[index + 1:])]
    assert blocks == alone
    assert (len(alone) > 0) == (stride >= window or len(windows) == 1)
    for track, ref_class in zip(tracks, ref_classes, strict=True):
        np.testing.assert_allclose(track.class_probs, ref_class, rtol=0, atol=1e-12)
    assert tracker.retained_state()["dense_arrays"] == 0


def test_held_window_is_a_copy_of_the_callers_logits():
    rng = np.random.default_rng(8)
    probs = np.stack([class_probs_for(label, rng) for label in (0, 1)])
    logits = rng.normal(0, 1, (2, 4, *GRID)).astype(np.float32)
    given = logits.copy()
    tracker = ClipTracker(4, 0.05)
    tracker.add_window(0, probs, logits)
    logits[:] = 0.0  # the caller reuses its buffer before the video ends
    tracks = tracker.finish()
    for track, query in zip(tracks, (0, 1), strict=True):
        for t in range(4):
            assert track.frame_logits[t].dtype == np.float64
            np.testing.assert_array_equal(track.frame_logits[t], given[query, t])


def test_window_callback_needs_frame_callback():
    with pytest.raises(ValueError, match="on_final_frame"):
        ClipTracker(5, 0.05, on_final_window=lambda *args: None)


def test_more_than_50_tracks():
    # 64 small objects at once (the original's buffers stop at 50), then 20 more appear.
    rng = np.random.default_rng(4)
    length = 12
    objects = [(x % NUM_CLASSES, [(y, x, y + 1, x + 1)] * length)
               for y in (1, 4, 7, 10) for x in range(16)]
    objects += [(1, [None] * 6 + [(y, x, y + 1, x + 1)] * 6) for y in (2, 5) for x in range(10)]
    tracks = run_tracker(synthetic_windows(objects, length, 5, 1, rng, noise=0.2), length)
    assert len(tracks) == len(objects) == 84
    assert sorted(n for n in assign_objects(tracks, objects, length)) == list(range(84))


def test_long_video_keeps_bounded_state():
    # 300 frames, 3 persistent objects and a short-lived extra one every 10 windows.
    rng = np.random.default_rng(5)
    length, window = 300, 5
    objects = [(0, moving_box(length, 1, 1, 0, 0)), (1, moving_box(length, 6, 6, 0, 0)),
               (2, moving_box(length, 1, 11, 0, 0, size=(4, 4)))]
    objects += [(3, [(9, 0, 11, 2) if s <= t < s + 2 else None for t in range(length)])
                for s in range(5, length - 5, 10)]
    calls = {}

    def sink(track_id, frame, logits):
        assert logits.shape == GRID
        calls[track_id, frame] = calls.get((track_id, frame), 0) + 1

    tracker = ClipTracker(length, 0.05, on_final_frame=sink)
    states = []
    for start, probs, logits in synthetic_windows(objects, length, window, 1, rng,
                                                  spurious=5):
        tracker.add_window(start, *keep_object_queries(probs, logits))
        states.append(tracker.retained_state())
    tracks = tracker.finish()
    # Every (track, covered frame) went out exactly once, and nothing is held afterwards.
    assert set(calls.values()) == {1}
    # Persistent objects: every frame. An extra one visible in [s, s+2) is in the windows
    # starting s-4 .. s+1, which cover the 10 frames s-4 .. s+5.
    assert len(calls) == 3 * length + 10 * len(objects[3:])
    assert tracker.retained_state()["dense_arrays"] == 0
    # Bounded: at most T windows; dense arrays bounded by what T windows of at most 4
    # instances can hold, independent of the video length; and periodic once warmed up.
    max_instances = 4
    per_window_bytes = max_instances * window * GRID[0] * GRID[1] * 4
    per_track_bytes = window * GRID[0] * GRID[1] * 8
    bound = window * per_window_bytes + window * max_instances * per_track_bytes
    assert max(s["windows"] for s in states) == window
    assert max(s["dense_bytes"] for s in states) <= bound
    assert max(s["active_tracks"] for s in states) <= max_instances * window
    for early in range(50, 60):
        assert states[early]["dense_arrays"] == states[early + 200]["dense_arrays"]
        assert states[early]["dense_bytes"] == states[early + 200]["dense_bytes"]
    assert len(tracks) == 3 + len(objects[3:])


def padded_window_logits(y, x):
    """One instance's logits (1, 3, 6, 8): a 2 x 2 object at (y, x) in a 4 x 6 frame, the
    padding cells (rows >= 4, columns >= 6) at +50."""
    logits = np.full((1, 3, 6, 8), -20.0, np.float32)
    logits[0, :, y:y + 2, x:x + 2] = 20.0
    logits[0, :, 4:, :] = logits[0, :, :, 6:] = 50.0
    return logits


def test_padding_cells_are_cropped_before_matching():
    # Grid 6 x 8 of which 4 x 6 cells are the frame. Object A (window 0 only) and object B
    # (window 1 only) never overlap, but the padding cells carry +50 in both: without the crop
    # they would share 20 "certain" cells per frame and merge into one track.
    probs = np.array([[0.9, 0.1]])
    outcomes = []
    for valid_size in (None, (4, 6)):
        tracker = ClipTracker(4, 0.05, valid_size=valid_size)
        tracker.add_window(0, probs, padded_window_logits(0, 0))
        tracker.add_window(1, probs, padded_window_logits(2, 4))
        tracks = tracker.finish()
        outcomes.append(len(tracks))
        if valid_size:
            assert all(lg.shape == (4, 6) for t in tracks for lg in t.frame_logits.values())
    assert outcomes == [1, 2]


def test_given_mask_probabilities_are_cropped_and_used_for_matching():
    """The predictor hands the device's sigmoids along; the tracker crops them as the logits
    and matches on them (here they disagree with the logits on purpose)."""
    probs = np.array([[0.9, 0.1]])
    first, second = padded_window_logits(0, 0), padded_window_logits(2, 4)

    def tracks_with(probs_of):
        tracker = ClipTracker(4, 0.05, valid_size=(4, 6))
        tracker.add_window(0, probs, first, probs_of(first))
        tracker.add_window(1, probs, second, probs_of(second))
        return tracker.finish()

    # Their sigmoids (padding cells included, cropped by the tracker): two objects.
    assert len(tracks_with(lambda logits: sigmoid(logits.copy()))) == 2
    # Probabilities saying the two windows show one object: one track, whatever the logits.
    assert len(tracks_with(lambda logits: np.full(logits.shape, 0.9, np.float32))) == 1
    tracker = ClipTracker(4, 0.05)
    with pytest.raises(ValueError, match="differ in shape"):
        tracker.add_window(0, probs, first, np.zeros((1, 2, 6, 8), np.float32))


def test_windows_must_come_in_order():
    tracker = ClipTracker(10, 0.05)
    tracker.add_window(3, np.zeros((0, 5)), np.zeros((0, 5, 2, 2)))
    with pytest.raises(ValueError, match="out of order"):
        tracker.add_window(2, np.zeros((0, 5)), np.zeros((0, 5, 2, 2)))
    with pytest.raises(ValueError, match="outside"):
        tracker.add_window(6, np.zeros((0, 5)), np.zeros((0, 5, 2, 2)))


def test_offline_single_window_is_the_kept_queries():
    rng = np.random.default_rng(6)
    probs = np.stack([class_probs_for(label, rng) for label in (0, NUM_CLASSES, 2)])
    logits = rng.normal(0, 1, (3, 7, *GRID)).astype(np.float32)
    tracks = run_tracker([(0, probs, logits)], 7)
    assert len(tracks) == 2
    for track, query in zip(tracks, (0, 2), strict=True):
        np.testing.assert_allclose(track.class_probs, probs[query], atol=1e-15)
        for t in range(7):
            np.testing.assert_array_equal(track.frame_logits[t], logits[query, t])


# ============================================================================ upsampling

def test_bilinear_hand_case():
    # in = 2, out = 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (upper neighbour
    # clamped): [0, 4] -> [0, 1, 3, 4], as torch.nn.functional.interpolate gives.
    low, high, weight = bilinear_taps(2, 4)
    assert low.tolist() == [0, 0, 0, 1] and high.tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(weight, [0, 0.25, 0.75, 0.25])
    np.testing.assert_allclose(bilinear_resize(np.array([[0.0, 4.0]]), (1, 4)), [[0, 1, 3, 4]])
    np.testing.assert_allclose(bilinear_resize(np.array([[0.0], [4.0]]), (4, 1)).ravel(),
                               [0, 1, 3, 4])


@pytest.mark.parametrize("resized,padded,output", [
    ((90, 130), (16, 20), (180, 260)), ((96, 128), (12, 16), (100, 133)),
    ((41, 57), (6, 8), (5, 7))])
def test_upsampler_crops_valid_cells_and_matches_jax_resize(resized, padded, output):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    upsampler = StrideEightUpsampler(resized, output)
    valid = stride8_valid_size(*resized)
    assert upsampler.valid_size == valid
    logits = rng.normal(0, 1, padded)
    logits[valid[0]:, :] = 100.0  # padding cells must not leak into the mask
    logits[:, valid[1]:] = 100.0
    expected = jax.image.resize(jnp.asarray(logits[:valid[0], :valid[1]], jnp.float32), output,
                                "bilinear", antialias=False)
    np.testing.assert_allclose(upsampler.logits(logits), np.asarray(expected), atol=1e-5)
    mask = upsampler(logits)
    assert mask.shape == output and mask.dtype == bool


def test_valid_grid_sizes():
    assert stride8_valid_size(360, 640) == (45, 80)
    assert stride8_valid_size(361, 641) == (46, 81)
    assert StrideEightUpsampler((360, 640), (720, 1280)).valid_size == (45, 80)
    with pytest.raises(ValueError, match="smaller than the valid"):
        StrideEightUpsampler((360, 640), (720, 1280))(np.zeros((44, 80)))
