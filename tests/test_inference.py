"""Whole-video inference: window layout, feature reuse, exactness against direct model calls,
and the evaluate command end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pycocotools.mask as mask_util
import pytest

from ifc_jax.config import load_config
from ifc_jax.inference import predictor as predictor_module
from ifc_jax.inference import tracking as tracking_module
from ifc_jax.inference.packing import PackedVideos
from ifc_jax.inference.predictor import VideoPredictor, window_bounds
from ifc_jax.models.ifc import IFC
from tests import numpy_reference as ref
from tests.test_train_loop import SMALL_MODEL


def test_window_bounds_follow_the_reference_loop():
    assert window_bounds(7, 5, 1) == [(0, 5), (1, 6), (2, 7)]
    assert window_bounds(10, 5, 3) == [(0, 5), (3, 8), (5, 10)]
    assert window_bounds(5, 5, 1) == [(0, 5)]
    assert window_bounds(3, 5, 1) == [(0, 3)]  # shorter than a window: one short window
    assert window_bounds(36, 36, 1) == [(0, 36)]
    with pytest.raises(ValueError):
        window_bounds(0, 5, 1)


@pytest.fixture(scope="module")
def model_and_variables():
    config = load_config("configs/tiny.py")
    # Window merging and masks do not depend on the depth: fewer layers, less to compile.
    config.model.enc_layers, config.model.dec_layers = 1, 2
    model = IFC.from_config(config.model)
    frames = jnp.zeros((1, 2, 40, 56, 3), jnp.uint8)
    variables = jax.jit(model.init)(jax.random.key(0), frames, jnp.zeros((1, 2, 40, 56), bool))
    # Make class 1 win for every query so that windows keep instances (random init would
    # mostly predict no-object).
    bias = variables["params"]["class_embed"]["layers_1"]["dense"]["bias"]
    variables["params"]["class_embed"]["layers_1"]["dense"]["bias"] = bias.at[1].add(8.0)
    return model, variables


def _read_json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as stream:
        return json.load(stream)


def _video(length, seed=0, height=40, width=56):
    return np.random.RandomState(seed).randint(0, 256, (length, height, width, 3)).astype(
        np.uint8)


def _direct(model, variables, frames):
    padding = jnp.zeros(frames.shape[:3], bool)
    out = model.apply(variables, jnp.asarray(frames)[None], padding[None])
    probs = jax.nn.softmax(out["pred_logits"][-1, 0], axis=-1)
    return np.asarray(probs), np.asarray(out["pred_masks"][-1, 0])


def test_rle_threads_on_a_cpu_leave_the_cores_to_xla():
    rle_threads = predictor_module.rle_threads
    assert rle_threads(2, "cpu", 2) == 1
    assert rle_threads(2, "cpu", 1) == 1
    assert rle_threads(3, "cpu", 4) == 2
    assert rle_threads(2, "cpu", 16) == 2
    assert rle_threads(4, "gpu", 2) == 4 and rle_threads(4, "tpu", 1) == 4
    assert rle_threads(0, "cpu", 8) == 0  # inline stays inline


def test_the_predictors_rle_pool_has_the_capped_size(model_and_variables, monkeypatch):
    monkeypatch.setattr(predictor_module, "available_cores", lambda: 2)
    model, variables = model_and_variables
    predictor = VideoPredictor(model, variables, window_frames=5, window_stride=1,
                               match_threshold=0.05, host_threads=2)
    assert predictor.host_threads == 1
    assert predictor._pool._max_workers == 1  # the executor's own count of its threads


def test_windows_see_the_same_features_as_a_direct_forward(model_and_variables, monkeypatch):
    model, variables = model_and_variables
    frames = _video(6, seed=1)
    seen = []
    original = predictor_module.ClipTracker.add_window

    def recording(self, start, probs, logits, mask_probs=None):
        seen.append((start, probs, logits))
        # The device's sigmoids, as the tracker computes them (float32, within rounding).
        np.testing.assert_allclose(mask_probs, tracking_module.sigmoid(logits.copy()),
                                   rtol=1e-6, atol=1e-7)
        return original(self, start, probs, logits, mask_probs)

    monkeypatch.setattr(predictor_module.ClipTracker, "add_window", recording)
    encode_calls = []
    # Chunks of max(T, 2 S) = 4 frames; windows (0,3) (2,5) in one call, (3,6) across the
    # two chunks in another.
    predictor = VideoPredictor(model, variables, window_frames=3, window_stride=2,
                               match_threshold=0.05, windows_per_call=2)
    real_encode = predictor.encode_frames
    predictor.encode_frames = lambda *a: encode_calls.append(1) or real_encode(*a)
    result = predictor.predict(iter(frames), 6, (40, 56), (80, 112))
    assert [start for start, _, _ in seen] == [0, 2, 3]  # (0,3) (2,5) (3,6)
    assert len(encode_calls) == 2  # 6 frames in chunks of 4: each frame encoded once
    assert [call.starts for call in predictor.plan(6)] == [(0, 2), (3,)]
    for start, probs, logits in seen:
        direct_probs, direct_logits = _direct(model, variables, frames[start:start + 3])
        kept = np.argmax(direct_probs, -1) != direct_probs.shape[-1] - 1
        np.testing.assert_allclose(probs, direct_probs[kept], atol=1e-5)
        np.testing.assert_allclose(logits, direct_logits[kept], atol=1e-3)
    assert result.num_windows == 3
    assert all(len(segs) == 6 for segs in result.segmentations)


def test_new_variables_of_the_same_shapes_reuse_the_compiled_programs(model_and_variables):
    """The predictor keeps its variables packed; assigning new ones (as evaluation during
    training does) must reuse the programs and give the new variables' outputs."""
    model, variables = model_and_variables
    frames = _video(3, seed=2)
    predictor = VideoPredictor(model, variables, window_frames=3, window_stride=3,
                               match_threshold=0.05)
    jax.tree.map(np.testing.assert_array_equal, predictor.variables, variables)
    before = predictor.predict(iter(frames), 3, (40, 56), (40, 56))
    scaled = jax.tree.map(lambda x: x * 1.5 if jnp.issubdtype(x.dtype, jnp.floating) else x,
                          variables)
    predictor.variables = scaled
    after = predictor.predict(iter(frames), 3, (40, 56), (40, 56))
    assert predictor.encode_frames._cache_size() == 1
    assert predictor.run_windows._cache_size() == 1
    fresh = VideoPredictor(model, scaled, window_frames=3, window_stride=3,
                           match_threshold=0.05).predict(iter(frames), 3, (40, 56), (40, 56))
    assert len(after.class_probs) == len(fresh.class_probs)
    for a, b in zip(after.class_probs, fresh.class_probs, strict=True):
        np.testing.assert_array_equal(a, b)
    assert after.segmentations == fresh.segmentations
    assert not (len(before.class_probs) == len(after.class_probs) and all(
        np.array_equal(a, b) for a, b in zip(before.class_probs, after.class_probs, strict=True)))


def test_submitted_videos_complete_in_any_order_with_the_results_of_predict(
        model_and_variables, monkeypatch):
    """`submit` returns with device calls still in flight (their windows are tracked in
    `result()`): the next video can be submitted first, and each video's result equals its
    `predict` alone."""
    model, variables = model_and_variables
    predictor = VideoPredictor(model, variables, window_frames=3, window_stride=1,
                               match_threshold=0.05, windows_per_call=2)
    videos = [_video(9, seed=5), _video(7, seed=6)]
    alone = [predictor.predict(list(v), len(v), (40, 56), (40, 56)) for v in videos]
    tracked = []
    original = predictor_module.VideoTracking.add_window
    monkeypatch.setattr(predictor_module.VideoTracking, "add_window",
                        lambda self, *args: tracked.append(args[0]) or original(self, *args))
    first = predictor.submit(list(videos[0]), 9, (40, 56), (40, 56))
    windows_at_submit = len(tracked)
    second = predictor.submit(list(videos[1]), 7, (40, 56), (40, 56))
    assert windows_at_submit < 7  # 7 windows; the last calls' ones wait for result()
    for pending, expected in zip((second, first), alone[::-1], strict=True):
        got = pending.result()
        assert pending.result() is got  # completed once
        assert got.segmentations == expected.segmentations
        assert got.num_windows == expected.num_windows
        for a, b in zip(got.class_probs, expected.class_probs, strict=True):
            np.testing.assert_array_equal(a, b)
    assert sorted(tracked) == sorted(list(range(7)) + list(range(5)))


def test_packed_offline_videos_equal_each_video_alone(model_and_variables):
    """Offline (T=5): short videos' frames share chunks (10 frames of four videos: 2 chunks
    instead of 4), a size change closes the open chunk, a video longer than T goes through
    `submit`; in any order of results each video's tracks equal its `predict` alone, bit for
    bit, and those equal the model run on the video alone."""
    model, variables = model_and_variables
    predictor = VideoPredictor(model, variables, window_frames=5, window_stride=5,
                               match_threshold=0.05)
    specs = [(2, 40, 56), (4, 40, 56), (3, 40, 56), (1, 40, 56), (2, 36, 52), (7, 40, 56)]
    videos = [_video(length, seed=20 + i, height=h, width=w)
              for i, (length, h, w) in enumerate(specs)]
    sizes = [(v.shape[1:3], (2 * v.shape[1], 2 * v.shape[2])) for v in videos]
    alone = [predictor.predict(list(v), len(v), *size)
             for v, size in zip(videos, sizes, strict=True)]
    encoded = []
    encode = predictor.encode_frames
    predictor.encode_frames = lambda *args: encoded.append(1) or encode(*args)

    def check(results):
        for got, expected in zip(results, alone, strict=True):
            assert got.segmentations == expected.segmentations
            assert got.num_windows == expected.num_windows
            assert len(got.class_probs) == len(expected.class_probs) > 0
            for a, b in zip(got.class_probs, expected.class_probs, strict=True):
                np.testing.assert_array_equal(a, b)

    stream = PackedVideos(predictor)
    handles = [stream.submit(iter(v), len(v), *size) for v, size in zip(videos, sizes,
                                                                         strict=True)]
    check([handle.result() for handle in handles[::-1]][::-1])
    assert len(encoded) == 2 + 1 + 2  # 10 frames in 5-frame chunks, 2 frames, 2 windows
    # One result asked for before the next videos fill the chunk: it is encoded part-full.
    encoded.clear()
    stream = PackedVideos(predictor)
    results, previous = [], None
    for v, size in zip(videos, sizes, strict=True):
        handle = stream.submit(iter(v), len(v), *size)
        if previous is not None:
            results.append(previous.result())
        previous = handle
    check([*results, previous.result()])
    assert len(encoded) < 6 + 1  # fewer than one chunk per video
    # The independent reference: the model on the 4-frame video alone, no padding.
    direct_probs, direct_logits = _direct(model, variables, videos[1])
    kept = np.flatnonzero(np.argmax(direct_probs, -1) != direct_probs.shape[-1] - 1)
    assert len(alone[1].class_probs) == len(kept)
    for track, query in enumerate(kept):
        np.testing.assert_allclose(alone[1].class_probs[track], direct_probs[query], atol=1e-5)
        for t in range(4):
            expected = ref.torch_bilinear(direct_logits[query, t].astype(np.float64), 80,
                                          112) > 0
            decoded = mask_util.decode(results[1].segmentations[track][t]).astype(bool)
            assert (decoded != expected).sum() <= 3


def test_a_videos_host_side_is_freed_without_the_garbage_collector(model_and_variables):
    """No reference cycle holds a finished video's tracker, tracks or RLEs (near-online and
    packed offline): the collector would otherwise free each video's objects in passes that
    cost more the more results a long evaluation holds."""
    import gc

    model, variables = model_and_variables
    near = VideoPredictor(model, variables, window_frames=3, window_stride=1,
                          match_threshold=0.05, windows_per_call=2)
    offline = VideoPredictor(model, variables, window_frames=5, window_stride=5,
                             match_threshold=0.05)
    videos = [_video(6, seed=40), _video(4, seed=41)]

    def run_both():
        assert near.predict(list(videos[0]), 6, (40, 56), (40, 56)).segmentations
        stream = PackedVideos(offline)
        handles = [stream.submit(iter(v), len(v), (40, 56), (40, 56)) for v in videos]
        assert all(handle.result().segmentations for handle in handles)

    run_both()  # compiles: tracing leaves its own garbage
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run_both()
        gc.collect()
        ours = sorted({type(o).__qualname__ for o in gc.garbage
                       if type(o).__module__.startswith("ifc_jax")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []


def test_predictions_with_device_rles_equal_the_host_ones(model_and_variables):
    """A whole video at twice its model size: the same tracks, the same masks up to pixels
    at float32 rounding from 0."""
    model, variables = model_and_variables
    frames = _video(7, seed=7)
    results = {}
    for mask_rle in ("host", "device"):
        predictor = VideoPredictor(model, variables, window_frames=3, window_stride=1,
                                   match_threshold=0.05, windows_per_call=2,
                                   mask_rle=mask_rle).on_device(jax.devices()[1])
        results[mask_rle] = predictor.predict(list(frames), 7, (40, 56), (80, 112))
    host, device = results["host"], results["device"]
    assert len(host.segmentations) == len(device.segmentations) > 0
    for a, b in zip(host.class_probs, device.class_probs, strict=True):
        np.testing.assert_array_equal(a, b)
    differing = 0
    for host_track, device_track in zip(host.segmentations, device.segmentations, strict=True):
        for a, b in zip(host_track, device_track, strict=True):
            differing += int((mask_util.decode(a) != mask_util.decode(b)).sum())
    assert differing <= 2


def test_short_video_single_window_masks_match_reference(model_and_variables):
    """A 2-frame video with T=5: one padded window; masks = crop, bilinear to original, > 0."""
    model, variables = model_and_variables
    frames = _video(2, seed=2, height=36, width=52)  # 36x52 -> stride-8 grid 5x7
    predictor = VideoPredictor(model, variables, window_frames=5, window_stride=1,
                               match_threshold=0.05)
    result = predictor.predict(list(frames), 2, (36, 52), (72, 104))
    direct_probs, direct_logits = _direct(model, variables, frames)
    kept = np.flatnonzero(np.argmax(direct_probs, -1) != direct_probs.shape[-1] - 1)
    assert len(result.class_probs) == len(kept) > 0
    for track, query in enumerate(kept):  # one window: tracks in kept-query order
        np.testing.assert_allclose(result.class_probs[track], direct_probs[query], atol=1e-5)
        for t in range(2):
            logits = direct_logits[query, t][:5, :7]  # ceil(36/8) x ceil(52/8)
            expected = ref.torch_bilinear(logits.astype(np.float64), 72, 104) > 0
            decoded = mask_util.decode(result.segmentations[track][t]).astype(bool)
            assert decoded.shape == (72, 104)
            # Allow a handful of pixels whose logit sits at float noise from 0.
            assert (decoded != expected).sum() <= 3


def test_padded_input_sizes_share_one_program_and_mask_the_padding(model_and_variables):
    """pad_size_multiple: frames of two sizes go to the model at one padded size (one compiled
    program each), and the result is the model's on that padded input with the padding
    masked, cropped to the frame's own stride-8 cells."""
    model, variables = model_and_variables
    predictor = VideoPredictor(model, variables, window_frames=5, window_stride=5,
                               match_threshold=0.05, pad_size_multiple=64)
    for height, width, seed in ((36, 52, 3), (60, 40, 4)):
        frames = _video(2, seed=seed, height=height, width=width)
        result = predictor.predict(list(frames), 2, (height, width), (height, width))
        padded = np.zeros((2, 64, 64, 3), np.uint8)
        padded[:, :height, :width] = frames
        padding = np.ones((1, 2, 64, 64), bool)
        padding[..., :height, :width] = False
        out = model.apply(variables, jnp.asarray(padded)[None], jnp.asarray(padding))
        probs = np.asarray(jax.nn.softmax(out["pred_logits"][-1, 0], axis=-1))
        kept = np.flatnonzero(np.argmax(probs, -1) != probs.shape[-1] - 1)
        assert len(result.class_probs) == len(kept) > 0
        cells = (-(-height // 8), -(-width // 8))
        for track, query in enumerate(kept):
            np.testing.assert_allclose(result.class_probs[track], probs[query], atol=1e-5)
            for t in range(2):
                logits = np.asarray(out["pred_masks"][-1, 0, query, t])[:cells[0], :cells[1]]
                expected = ref.torch_bilinear(logits.astype(np.float64), height, width) > 0
                decoded = mask_util.decode(result.segmentations[track][t]).astype(bool)
                assert (decoded != expected).sum() <= 3
    assert predictor.encode_frames._cache_size() == 1
    assert predictor.run_windows._cache_size() == 1


def test_chunk_inputs_are_the_frames_zero_padded_whatever_the_buffers_held(
        model_and_variables, monkeypatch):
    """Chunk buffers are not zero-filled as a whole: with every np.empty buffer full of 255
    bytes, what `encode_frames` receives is still the frames on a zero canvas (spatial
    padding and blank filler frames) with the padding mask, for `predict`'s chunks (a full
    one, then a last one of 2 frames) and for packed videos flushed part-full."""
    model, variables = model_and_variables
    predictor = VideoPredictor(model, variables, window_frames=5, window_stride=5,
                               match_threshold=0.05, pad_size_multiple=64)
    empty = np.empty

    def dirty_empty(*args, **kwargs):
        array = empty(*args, **kwargs)
        array.view(np.uint8).fill(255)
        return array

    received = []
    encode = predictor.encode_frames

    def recording(packed, pixels, padding):
        received.append((np.array(pixels), np.array(padding)))
        return encode(packed, pixels, padding)

    predictor.encode_frames = recording
    monkeypatch.setattr(np, "empty", dirty_empty)
    height, width = 36, 52
    video = _video(7, seed=5, height=height, width=width)
    predictor.predict(iter(video), 7, (height, width), (height, width))
    short = [_video(2, seed=6, height=height, width=width),
             _video(1, seed=7, height=height, width=width)]
    stream = PackedVideos(predictor)
    handles = [stream.submit(iter(v), len(v), (height, width), (height, width))
               for v in short]
    for handle in handles:
        handle.result()
    monkeypatch.setattr(np, "empty", empty)
    expected_chunks = [video[:5], video[5:], np.concatenate(short)]
    assert len(received) == len(expected_chunks)
    for (pixels, padding), frames in zip(received, expected_chunks, strict=True):
        canvas = np.zeros((5, 64, 64, 3), np.uint8)
        canvas[:len(frames), :height, :width] = frames
        mask = np.ones((5, 64, 64), bool)
        mask[:len(frames), :height, :width] = False
        np.testing.assert_array_equal(pixels, canvas)
        np.testing.assert_array_equal(padding, mask)


@pytest.fixture(scope="module")
def toy_workdir(tmp_path_factory):
    """A tiny toy split and a random-init checkpoint (class 0 favoured) in a workdir."""
    from ifc_jax.checkpoints import Checkpoints
    from ifc_jax.data.toy import generate_toy_dataset
    from ifc_jax.train.optim import build_optimizer
    from ifc_jax.train.step import init_state

    base = tmp_path_factory.mktemp("evaluate")
    root = str(base / "toy")
    generate_toy_dataset(root, seed=3, num_train=2, num_val=3, min_frames=4, max_frames=7)
    # The toy recipe at the tests' small sizes (what `evaluate` is given below too).
    config = load_config("configs/toy.py", [override.removeprefix("--") for override in
                                            SMALL_MODEL])
    config.data.root = root
    model = IFC.from_config(config.model)
    frames = np.zeros((1, 1, 64, 64, 3), np.uint8)
    optimizer, _ = build_optimizer(config.train, 2)
    state = jax.jit(lambda r: init_state(model, optimizer, r, frames,
                                         np.zeros((1, 1, 64, 64), bool)))(jax.random.key(0))
    bias = state["params"]["class_embed"]["layers_1"]["dense"]["bias"]
    state["params"]["class_embed"]["layers_1"]["dense"]["bias"] = bias.at[0].add(8.0)
    workdir = str(base / "workdir")
    checkpoints = Checkpoints(workdir, 1, 1)
    checkpoints.save(0, state, force=True)
    checkpoints.close()
    return config, workdir, root


def test_evaluate_writes_results_and_metrics(toy_workdir, capsys):
    from ifc_jax import cli

    config, workdir, root = toy_workdir
    code = cli.main(["evaluate", "--config", "configs/toy.py", "--workdir", workdir, "--json",
                     f"--config.data.root={root}", "--config.data.dataset=ytvis19",
                     "--config.inference.window_frames=3", *SMALL_MODEL])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 3
    results = _read_json(workdir, "eval", "results.json")
    gt = _read_json(root, "valid.json")
    videos = {video["id"]: video for video in gt["videos"]}
    assert results, "the favoured class should give predictions"
    for entry in results:
        video = videos[entry["video_id"]]
        assert len(entry["segmentations"]) == video["length"]
        assert entry["segmentations"][0]["size"] == [video["height"], video["width"]]
        assert entry["category_id"] in {c["id"] for c in gt["categories"]}
        assert 0.01 < entry["score"] <= 1
    metrics = _read_json(workdir, "eval", "metrics.json")
    assert list(metrics)[:12] == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
                                  "AR100", "ARs", "ARm", "ARl"]
    run = metrics.pop("run")
    assert summary["metrics"] == metrics
    assert run == summary["run"]
    assert (run["checkpoint_step"], run["window_frames"], run["window_stride"]) == (0, 3, 1)
    assert run["weights"] == os.path.abspath(workdir) and len(run["config_sha256"]) == 16
    assert sorted(os.listdir(os.path.join(workdir, "eval"))) == ["metrics.json",
                                                                 "results.json"]


def test_evaluate_refuses_a_class_count_mismatch_and_missing_weights(toy_workdir, capsys):
    from ifc_jax import cli

    _, workdir, root = toy_workdir
    code = cli.main(["evaluate", "--config", "configs/toy.py", "--workdir", workdir,
                     f"--config.data.root={root}", "--config.data.dataset=ytvis19",
                     "--config.model.num_classes=7", *SMALL_MODEL])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint does not fit" in err
    code = cli.main(["evaluate", "--config", "configs/toy.py", "--workdir", workdir + "-nope",
                     f"--config.data.root={root}"])
    err = capsys.readouterr().err
    assert code == 2 and "-nope" in err and len(err.strip().splitlines()) == 1
