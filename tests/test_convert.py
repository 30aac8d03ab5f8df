"""Weights import (`main.py convert`): parity with PyTorch, name maps, readers, errors.

The fixtures were written by tests/fixtures/make_ifc_parity_fixture.py (PyTorch, run apart).
Relative error of an output = max|ours - torch| / max|torch|; every output must also agree
elementwise: |ours - torch| <= 1e-4 * |torch| + 1e-5 * max|torch|.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from ifc_jax.checkpoints import load_variables, merge_params
from ifc_jax.cli import main
from ifc_jax.config import load_config
from ifc_jax.convert import convert_checkpoint, key_maps
from ifc_jax.convert.convert import FLAVOURS
from ifc_jax.convert.torch_pickle import load_checkpoint, to_numpy
from ifc_jax.io import UserError
from ifc_jax.models.ifc import IFC
from ifc_jax.models.resnet import FrozenBatchNorm, ResNet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
PTH = os.path.join(FIXTURES, "ifc_parity.pth")
CONFIG = os.path.join(FIXTURES, "ifc_parity_config.py")
MAX_RELATIVE_ERROR = 1e-4
PREFIX = key_maps.IFC_BACKBONE_PREFIX


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURES, "ifc_parity.npz")))


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def converted(config):
    return convert_checkpoint(PTH, config, CONFIG)


@pytest.fixture(scope="module")
def state_dict():
    """The fixture's state dict (official names) as numpy, read by our own reader."""
    loaded, _ = load_checkpoint(PTH)
    return {key: to_numpy(value) for key, value in loaded["model"].items()}


def relative_error(ours, torch_value) -> float:
    ours, torch_value = np.asarray(ours, np.float64), np.asarray(torch_value, np.float64)
    assert ours.shape == torch_value.shape
    return float(np.max(np.abs(ours - torch_value)) / np.max(np.abs(torch_value)))


def assert_parity(name, ours, torch_value) -> float:
    error = relative_error(ours, torch_value)
    assert error < MAX_RELATIVE_ERROR, f"{name}: relative error {error:.2e}"
    scale = float(np.max(np.abs(torch_value)))
    np.testing.assert_allclose(ours, torch_value, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    return error


def backbone_features(config, variables, frames, padding):
    model = IFC.from_config(config.model)
    backbone = config.model.backbone
    resnet = ResNet(depth=backbone.depth, width=backbone.width,
                    stage_blocks=tuple(backbone.stage_blocks),
                    stride_in_1x1=backbone.stride_in_1x1)
    return resnet.apply({"params": variables["params"]["backbone"],
                         "batch_stats": variables["batch_stats"]["backbone"]},
                        model.normalize(frames, padding))


def test_fixture_dimensions_match_the_config(reference, config):
    model = config.model
    assert reference["dims"].tolist() == [
        model.backbone.width, model.hidden_dim, model.num_heads, model.dim_feedforward,
        model.num_memory_tokens, model.num_queries, model.num_classes, model.enc_layers,
        model.dec_layers]
    assert tuple(reference["stage_blocks"]) == tuple(model.backbone.stage_blocks)


def test_converted_ifc_matches_pytorch(reference, config, converted):
    model = IFC.from_config(config.model)

    @jax.jit
    def forward(variables, frames, padding):
        return model.apply(variables, frames, padding, all_layers=True,
                           capture_intermediates=True, mutable=["intermediates"])

    outputs, state = forward(converted.variables, reference["frames"],
                             reference["padding_mask"])
    captured = state["intermediates"]
    features = captured["backbone"]["__call__"][0]
    encoded = captured["encoder"]["__call__"][0]
    ours = {
        "res3": features["res3"], "res4": features["res4"], "res5": features["res5"],
        "encoder_frame_tokens": encoded.frame_tokens,
        "encoder_memory_tokens": encoded.memory_tokens,
        "mask_features": captured["spatial_decoder"]["__call__"][0],
        "pred_logits": outputs["pred_logits"],  # all 3 decoder layers
        "pred_masks": outputs["pred_masks"],
    }
    errors = {name: assert_parity(name, value, reference[f"ifc_{name}"])
              for name, value in ours.items()}
    print("relative errors vs PyTorch:", {k: f"{v:.1e}" for k, v in errors.items()})


def msra_config():
    config = load_config(CONFIG)
    model = config.model
    model.backbone.stride_in_1x1 = True
    model.input_format = "BGR"
    model.pixel_mean = (103.530, 116.280, 123.675)
    model.pixel_std = (1.0, 1.0, 1.0)
    return config


def test_caffe2_msra_backbone_matches_pytorch(reference):
    """Caffe2 names, folded BN, stride in the 1x1 conv and BGR input, against PyTorch."""
    config = msra_config()
    conversion = convert_checkpoint(os.path.join(FIXTURES, "msra_backbone.pkl"), config)
    assert conversion.report["backbone_only"] and set(conversion.variables["params"]) == {
        "backbone"}
    assert set(conversion.report["ignored_keys"]) == {"fc1000_w", "fc1000_b",
                                                      "conv1_w_momentum"}
    assert not any("stride_in_1x1" in warning for warning in conversion.warnings)
    frames, padding = reference["frames"][1], reference["padding_mask"][1]  # a padded clip
    features = backbone_features(config, conversion.variables, frames, padding)
    for name in ("res3", "res4", "res5"):
        assert_parity(name, features[name], reference[f"msra_{name}"])
    # The check can fail: the other stride placement is far off (and warned about).
    config.model.backbone.stride_in_1x1 = False
    wrong = convert_checkpoint(os.path.join(FIXTURES, "msra_backbone.pkl"), config)
    assert any("stride_in_1x1=True" in warning for warning in wrong.warnings)
    features = backbone_features(config, wrong.variables, frames, padding)
    assert relative_error(features["res5"], reference["msra_res5"]) > 0.05


def test_report_lists_what_was_ignored(converted):
    report = converted.report
    assert report["ignored_keys"] == {
        "criterion.empty_weight": "class weights of the training loss (no-object 0.1)"}
    assert report["ignored_top_level"] == ["iteration", "optimizer", "scheduler"]
    assert report["converted_keys"] == 263 and not report["backbone_only"]
    assert report["written_arrays"] == {"params": 271, "batch_stats": 40}


def test_torch_reader_storage_types_and_views(reference):
    tensors, container = load_checkpoint(os.path.join(FIXTURES, "torch_dtypes.pth"))
    assert container.startswith("torch zip")
    expected_dtypes = {"float16": np.float16, "bfloat16": np.float32, "float64": np.float64,
                       "int64": np.int64, "int32": np.int32, "uint8": np.uint8,
                       "bool": np.bool_, "transposed": np.float32}
    for name, value in tensors.items():
        array = to_numpy(value)
        np.testing.assert_array_equal(array.astype(np.float64), reference[f"dtype_{name}"],
                                      err_msg=name)
        if name in expected_dtypes:
            assert array.dtype == expected_dtypes[name], name


class Unloadable:
    """A class the converter's unpickler must not import (it becomes an inert stand-in)."""


def test_missing_extra_and_misshaped_keys_are_each_named(tmp_path, config, state_dict):
    state = dict(state_dict)
    state["detr.transformer.some_object"] = Unloadable()
    del state["detr.transformer.encoder.bus_layers.1.linear1.bias"]
    del state[f"{PREFIX}res3.1.conv2.norm.running_var"]
    state["detr.transformer.encoder.bus_layers.1.linear3.weight"] = np.zeros((4, 4), np.float32)
    state["detr.transformer.encoder.enc_layers.3.norm1.weight"] = np.ones(32, np.float32)
    state["detr.query_embed.weight"] = np.zeros((7, 32), np.float32)
    state["detr.class_embed.layers.1.weight"] = np.zeros((41, 32), np.float32)
    path = tmp_path / "variant.pkl"
    with open(path, "wb") as stream:
        pickle.dump({"model": state, "__author__": "test"}, stream)
    with pytest.raises(UserError) as raised:
        convert_checkpoint(str(path), config, "CFG")
    lines = str(raised.value).splitlines()
    assert lines[0] == f"{path}: does not fit the model of CFG (7 problems):"
    problems = sorted(line.strip() for line in lines[1:])
    assert len(problems) == 7
    expected = [
        "detr.class_embed.layers.1.weight: shape (41, 32) in the file, the config's model needs "
        "(4, 32) for params/class_embed/layers_1/dense/kernel (the file has 40 classes, "
        "config.model.num_classes is 3)",
        "detr.query_embed.weight: shape (7, 32) in the file, the config's model needs (5, 32) for"
        " params/query_embed (the file has 7 queries, config.model.num_queries is 5)",
        "detr.transformer.encoder.bus_layers.1.linear3.weight: unknown key (no variable of ours "
        "takes it; the file was read as: IFC checkpoint (detectron2 names))",
        "detr.transformer.encoder.enc_layers.3.norm1.weight: the config's model has no "
        "params/encoder/encode_receive_3/norm1/scale (config.model.enc_layers is 3)",
        "detr.transformer.some_object: an object of class tests.test_convert.Unloadable, which "
        "is not loaded (only tensors and numpy arrays are)",
        f"missing {PREFIX}res3.1.conv2.norm.running_var, needed for "
        "batch_stats/backbone/res3_1/conv2/norm/var",
        "missing detr.transformer.encoder.bus_layers.1.linear1.bias, needed for "
        "params/encoder/gather_communicate_1/ffn/linear1/bias",
    ]
    assert problems == expected


@pytest.mark.parametrize("value,bad", [(np.nan, 1), (np.inf, 1), (1e300, 2)])
def test_non_finite_weights_are_refused(tmp_path, config, state_dict, value, bad):
    name = f"{PREFIX}res3.1.conv2.norm.running_var"
    array = np.array(state_dict[name], np.float64)  # float64: 1e300 passes as a number
    array[:bad] = value
    path = _write_pickle(tmp_path / "bad.pkl", {"model": {**state_dict, name: array}})
    with pytest.raises(UserError) as raised:
        convert_checkpoint(path, config, "CFG")
    assert str(raised.value) == (
        f"{path}: does not fit the model of CFG: {name}: {bad} of {array.size} values are not "
        "finite in float32 (NaN, inf or beyond 3.4e38)")


def _to_torchvision(name: str) -> str:
    """detectron2 backbone name -> torchvision name (the inverse of the converter's map)."""
    stage_names = {f"res{s}": f"layer{s - 1}" for s in range(2, 6)}
    if name.startswith("stem.conv1.norm."):
        return "bn1." + name[len("stem.conv1.norm."):]
    if name == "stem.conv1.weight":
        return "conv1.weight"
    stage, block, conv, *rest = name.split(".")
    if conv == "shortcut":
        conv = "downsample.1" if rest[0] == "norm" else "downsample.0"
        rest = rest[1:] if rest[0] == "norm" else rest
    elif rest[0] == "norm":
        conv, rest = conv.replace("conv", "bn"), rest[1:]
    return ".".join([stage_names[stage], block, conv, *rest])


def _to_caffe2(name: str) -> str:
    branches = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c",
                "shortcut": "branch1"}
    suffix = {"weight": "s", "bias": "b"}
    if name.startswith("stem.conv1"):
        return "conv1_w" if name.endswith("weight") and ".norm." not in name else (
            f"res_conv1_bn_{suffix[name.rsplit('.', 1)[1]]}")
    stage, block, conv, *rest = name.split(".")
    base = f"{stage}_{block}_{branches[conv]}"
    return f"{base}_w" if rest == ["weight"] else f"{base}_bn_{suffix[rest[-1]]}"


def _write_pickle(path, payload) -> str:
    with open(path, "wb") as stream:
        pickle.dump(payload, stream, protocol=2)
    return str(path)


def test_backbone_name_maps(tmp_path, config, converted, state_dict):
    """detectron2 .pkl and torchvision names give the IFC checkpoint's backbone, bit for bit;
    Caffe2's folded BN gives scale * x + bias."""
    d2 = {key[len(PREFIX):]: value for key, value in state_dict.items()
          if key.startswith(PREFIX)}
    want = {"params": converted.variables["params"]["backbone"],
            "batch_stats": converted.variables["batch_stats"]["backbone"]}
    d2_file = _write_pickle(tmp_path / "R-50.pkl", {
        "model": {**d2, "stem.fc.weight": np.zeros((3, 128), np.float32),
                  "res2.0.conv1.norm.num_batches_tracked": np.zeros((), np.int64)},
        "__author__": "torchvision", "matching_heuristics": True})
    torchvision_file = _write_pickle(tmp_path / "resnet50.pkl", {
        **{_to_torchvision(key): value for key, value in d2.items()},
        "fc.weight": np.zeros((3, 128), np.float32), "fc.bias": np.zeros(3, np.float32)})
    for path, flavour in ((d2_file, "detectron2"), (torchvision_file, "torchvision")):
        conversion = convert_checkpoint(path, config)
        assert conversion.report["flavour"] == FLAVOURS[flavour]
        got = {"params": conversion.variables["params"]["backbone"],
               "batch_stats": conversion.variables["batch_stats"]["backbone"]}
        jax.tree.map(np.testing.assert_array_equal, got, want)
    assert set(conversion.report["ignored_keys"]) == {"fc.weight", "fc.bias"}

    # Caffe2: fold each BN into s, b; our frozen BN must then compute s * x + b.
    blobs = {}
    for key, value in d2.items():
        if key.endswith(".norm.weight"):
            base = key[: -len("weight")]
            scale = value / np.sqrt(d2[base + "running_var"] + 1e-5)
            blobs[_to_caffe2(key)] = scale
            blobs[_to_caffe2(base + "bias")] = d2[base + "bias"] - d2[base + "running_mean"] * scale
        elif not key.endswith(("running_mean", "running_var", ".norm.bias")):
            blobs[_to_caffe2(key)] = value
    conversion = convert_checkpoint(_write_pickle(tmp_path / "c2.pkl", {"blobs": blobs}), config)
    norm = conversion.variables
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype(np.float32)
    scale, bias = blobs["res_conv1_bn_s"], blobs["res_conv1_bn_b"]
    variables = {"params": norm["params"]["backbone"]["stem_conv1"]["norm"],
                 "batch_stats": norm["batch_stats"]["backbone"]["stem_conv1"]["norm"]}
    np.testing.assert_allclose(FrozenBatchNorm().apply(variables, x), x * scale + bias,
                               rtol=1e-6, atol=1e-6)
    frames = np.random.default_rng(1).integers(0, 255, (2, 72, 100, 3), dtype=np.uint8)
    padding = np.zeros((2, 72, 100), bool)
    folded = backbone_features(config, conversion.variables, frames, padding)
    original = backbone_features(config, converted.variables, frames, padding)
    for name in ("res3", "res4", "res5"):
        assert relative_error(folded[name], original[name]) < 1e-5


def test_unreadable_files_fail_with_one_clear_line(tmp_path, config):
    marker = tmp_path / "executed"
    cases = {
        "missing.pth": None,
        "folder.pth": "folder",
        "garbage.pth": b"\x00\x01 not a checkpoint at all",
        "truncated.pth": Path(PTH).read_bytes()[:5000],
        "legacy.pth": pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"rest",
        # A pickle that would run a shell command if its global were imported.
        "evil.pkl": f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(),
    }
    messages = {}
    for name, payload in cases.items():
        path = tmp_path / name
        if payload == "folder":
            path.mkdir()
        elif payload is not None:
            path.write_bytes(payload)
        with pytest.raises(UserError) as raised:
            convert_checkpoint(str(path), config)
        messages[name] = str(raised.value)
        assert "\n" not in messages[name] and messages[name].startswith(str(path))
    assert not marker.exists()
    assert "no such file" in messages["missing.pth"]
    assert "is a folder, not a checkpoint file" in messages["folder.pth"]
    assert "not a readable torch .pth or pickle .pkl" in messages["garbage.pth"]
    assert "legacy (PyTorch < 1.6" in messages["legacy.pth"]
    assert "not a dict of tensors" in messages["evil.pkl"]


def test_command_line_end_to_end(tmp_path, capsys, config, converted):
    out = str(tmp_path / "weights" / "ifc")
    assert main(["convert", "--from", PTH, "--to", out, "--config", CONFIG]) == 0
    printed = capsys.readouterr().out
    assert "converted 263 tensors" in printed and "criterion.empty_weight" in printed
    report = json.loads(Path(out, "conversion.json").read_text())
    assert report["source"] == os.path.abspath(PTH) and report["config"] == CONFIG
    loaded = load_variables(out)
    jax.tree.map(np.testing.assert_array_equal, loaded, converted.variables)

    # evaluate --weights / predict --weights: the shape-checked inference loader.
    from ifc_jax.inference.loading import load_trained_model
    load_trained_model(config, out)
    # --config.train.init_from: params (class_embed excluded) and frozen BN statistics.
    fresh = jax.eval_shape(IFC.from_config(config.model).init, jax.random.key(0),
                           np.zeros((1, 1, 64, 64, 3), np.uint8), np.zeros((1, 1, 64, 64), bool))
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), fresh)
    _, taken, kept = merge_params(fresh["params"], loaded["params"], ("class_embed",))
    assert kept == ["class_embed/layers_0/dense/bias", "class_embed/layers_0/dense/kernel",
                    "class_embed/layers_1/dense/bias", "class_embed/layers_1/dense/kernel"]
    _, stats_taken, stats_kept = merge_params(fresh["batch_stats"], loaded["batch_stats"])
    assert len(stats_taken) == 40 and not stats_kept

    assert main(["convert", "--from", PTH, "--to", out, "--config", CONFIG]) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert main(["convert", "--from", PTH, "--to", out, "--config", CONFIG, "--overwrite",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == out

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 broken zip")
    assert main(["convert", "--from", str(bad), "--to", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: ")
    assert not os.path.exists(tmp_path / "x")
    assert sorted(os.listdir(tmp_path / "weights")) == ["ifc"]  # no staging folders left


def test_converts_without_torch_tensorflow_or_clu(tmp_path):
    """The converter needs neither PyTorch nor the training stack (GPU hosts may lack them)."""
    out = tmp_path / "weights"
    code = (
        "import sys\n"
        "for name in ('torch', 'tensorflow', 'tensorflow_datasets', 'clu'):\n"
        "    sys.modules[name] = None  # importing them raises ImportError\n"
        "from ifc_jax.cli import main\n"
        f"sys.exit(main(['convert', '--from', {PTH!r}, '--to', {str(out)!r}, "
        f"'--config', {CONFIG!r}, '--json']))\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["written_arrays"] == {"params": 271, "batch_stats": 40}
