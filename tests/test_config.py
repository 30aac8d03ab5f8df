"""The config is the one authority: recipes found by name or path, overrides, and one
validation that names every bad key in one `error:` line."""

import dataclasses
import os
import re

import ml_collections
import pytest

from ifc_jax import cli
from ifc_jax.config import (
    VALIDATED_KEYS,
    apply_override,
    config_from_json,
    load_config,
    recipe,
    recipe_names,
    validate,
)
from ifc_jax.io import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One bad value per validated key (on top of the tiny recipe: hidden_dim 32, 10 queries,
# backbone depth 0, window 5), with the overrides it needs to be reachable.
BAD_VALUES = {
    "model.communication": ["bogus"],
    "model.kernels": ["cuda"],
    "model.num_memory_tokens": ["0"],
    "model.hidden_dim": ["48"],
    "model.num_heads": ["3"],
    "model.enc_layers": ["0"],
    "model.dec_layers": ["0"],
    "model.num_queries": ["0"],
    "model.num_classes": ["0"],
    "model.dim_feedforward": ["0"],
    "model.dropout": ["1.0"],
    "model.dtype": ["float16"],
    "model.attention": ["flash"],
    "model.input_format": ["YUV"],
    "model.pixel_mean": ["(1.0, 2.0)"],
    "model.pixel_std": ["(1.0, 0.0, 1.0)"],
    "model.backbone.depth": ["34"],
    "model.backbone.stage_blocks": ["(1, 1, 0, 1)"],
    "model.backbone.width": ["0"],
    "model.backbone.freeze_at": ["6"],
    "data.dataset": ["''"],
    "data.num_frames": ["0"],
    "data.sampling_frame_range": ["0"],
    "data.train_short_sides": ["()"],
    "data.train_crop": ["(600, 384)"],
    "inference.pad_size_multiple": ["48"],
    "data.train_max_size": ["0"],
    "data.flip_prob": ["1.5"],
    "data.test_short_side": ["0"],
    "data.test_max_size": ["0"],
    "data.max_instances": ["11"],
    "data.pad_height": ["100"],
    "data.pad_width": ["0"],
    "data.num_parallel_calls": ["0"],
    "data.prefetch_batches": ["-1"],
    "data.tfds_frame_stride": ["-1"],
    "data.toy.num_train": ["0"],
    "data.toy.num_val": ["0"],
    "data.toy.height": ["16"],
    "data.toy.width": ["16"],
    "data.toy.min_frames": ["0"],
    "data.toy.max_frames": ["7"],
    "data.toy.max_objects": ["0"],
    "data.toy.blur_prob": ["2.0"],
    "data.toy.mask_encoding": ["png"],
    "data.toy.jpeg_quality": ["0"],
    "train.batch_size": ["0"],
    "train.num_steps": ["0"],
    "train.lr": ["0.0"],
    "train.lr_decay_steps": ["(400, 100)"],
    "train.lr_decay_factor": ["0.0"],
    "train.warmup_steps": ["-1"],
    "train.backbone_lr_mult": ["-1.0"],
    "train.weight_decay": ["-1.0"],
    "train.grad_clip_norm": ["0.0"],
    "train.no_object_weight": ["0.0"],
    "train.matcher": ["gpu"],
    "train.loss_group_size": ["3"],  # tiny's batch of 2 clips does not split into 3s
    "train.log_every": ["0"],
    "train.tensorboard": ["'yes'"],
    "train.checkpoint_every": ["0"],
    "train.keep_checkpoints": ["0"],
    "train.eval_every_steps": ["-1"],
    "train.init_exclude": ["(1,)"],
    "distributed.mode": ["mpi"],
    "distributed.coordinator_address": ["''", "distributed.mode=explicit"],
    "distributed.num_processes": ["0"],
    "distributed.process_id": ["1"],
    "inference.window_frames": ["0"],
    "inference.window_stride": ["6"],
    "inference.match_threshold": ["1.5"],
    "inference.windows_per_call": ["0"],
    "inference.host_threads": ["-1"],
    "inference.overlay_threads": ["-1"],
    "inference.mask_rle": ["gpu"],
    "inference.max_results_per_category": ["-5"],
    "inference.class_threshold": ["1.0"],
    "inference.multi_class": ["1"],
    "inference.drop_empty_tracks": ["'yes'"],
    "inference.min_track_pixels": ["-1"],
    "summary.height": ["0"],
    "summary.width": ["0"],
    "summary.num_frames": ["0"],
}


def test_every_validated_key_has_a_bad_value_here():
    assert sorted(BAD_VALUES) == sorted(VALIDATED_KEYS)


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_a_bad_value_is_one_error_line_naming_the_key(capsys, key):
    value, *needed = BAD_VALUES[key]
    argv = ["summary", "--config", "tiny", *(f"--config.{item}" for item in needed),
            f"--config.{key}={value}"]
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and key in lines[0], lines[0]
    assert captured.out == ""


def test_all_recipes_are_valid():
    names = recipe_names()
    assert {"base", "ifc_r50_ytvis19", "ifc_r101_ytvis19", "ifc_r50_ytvis21", "ifc_r50_ovis",
            "tiny", "toy"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.is_locked


def test_the_base_is_the_paper_recipe():
    config = load_config("base")
    assert config.to_dict() == load_config("ifc_r50_ytvis19").to_dict()
    assert (config.train.batch_size, config.train.num_steps, config.train.lr) == (16, 6000, 1e-4)
    assert (config.model.num_queries, config.inference.window_frames) == (100, 5)


def test_the_toy_section_is_every_toy_generator_parameter():
    from ifc_jax.data.toy import ToySpec

    toy = load_config("base").data.toy
    assert set(toy.keys()) == {field.name for field in dataclasses.fields(ToySpec)}
    assert dict(toy) == dataclasses.asdict(ToySpec())


def test_recipe_by_path_by_name_and_variant():
    by_path = load_config("configs/ifc_r50_ytvis19.py")
    by_name = load_config("ifc_r50_ytvis19")
    assert by_path.to_dict() == by_name.to_dict()
    assert load_config("ifc_r50_ytvis19:offline").inference.window_frames == 36
    assert load_config("configs/ifc_r101_ytvis19.py:offline").inference.window_frames == 36
    assert load_config("ifc_r101_ytvis19").model.backbone.depth == 101
    ovis, ytvis21 = load_config("ifc_r50_ovis:offline"), load_config("ifc_r50_ytvis21")
    assert (ovis.model.num_classes, ovis.data.dataset, ovis.inference.window_frames) == (
        25, "ovis", 36)
    assert (ytvis21.model.num_classes, ytvis21.data.val_json) == (40, "valid/instances.json")
    with pytest.raises(UserError, match="ifc_r50_ytvis19.py:bogus: get_config failed"):
        load_config("ifc_r50_ytvis19:bogus")
    with pytest.raises(UserError, match="nope: config file not found.*toy"):
        load_config("nope")


def test_recipe_paths_work_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("configs/toy.py").model.hidden_dim == 64
    assert load_config("toy").model.hidden_dim == 64
    with pytest.raises(UserError, match="elsewhere/toy.py: config file not found"):
        load_config("elsewhere/toy.py")


def test_a_config_file_outside_the_recipes_derives_by_name(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from ifc_jax.config import recipe\n\n\ndef get_config(arg='8'):\n"
                    "    config = recipe('tiny')\n"
                    "    config.model.num_queries = int(arg)\n    return config\n")
    assert load_config(str(path)).model.num_queries == 8
    assert load_config(f"{path}:6").model.num_queries == 6


@pytest.mark.parametrize("body,needle", [
    ("    del config.train.lr\n", "config.train.lr: missing"),
    ("    config.train.speed = 3\n", "config.train.speed: unknown key"),
    ("    del config.model.num_heads\n    config.model.num_heads = 'two'\n",
     "config.model.num_heads: expected a int"),
    ("    del config.inference\n    config.inference = 5\n",
     "config.inference: must be a section"),
])
def test_structure_is_checked_against_the_base(tmp_path, body, needle):
    path = tmp_path / "bad.py"
    path.write_text("import ml_collections\nfrom ifc_jax.config import recipe\n\n\n"
                    "def get_config():\n    config = recipe('tiny')\n"
                    "    config.unlock()\n" + body + "    return config\n")
    with pytest.raises(UserError, match=re.escape(needle)):
        load_config(str(path))


@pytest.mark.parametrize("text,needle", [
    ("x = 1\nraise RuntimeError('boom')\n", "RuntimeError: boom (line 2) while it was loaded"),
    ("import no_such_module_here\n", "ModuleNotFoundError: No module named"),
    ("def get_config():\n    return {}['k']\n", "get_config raised KeyError: 'k' (line 2)"),
    ("def get_config():\n    return 5\n", "must return an ml_collections.ConfigDict"),
])
def test_a_config_file_that_fails_is_one_error_naming_it(tmp_path, capsys, text, needle):
    path = tmp_path / "broken.py"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(f"{path}: ")) as info:
        load_config(str(path))
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert cli.main(["summary", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_validate_locks_and_a_notebook_config_can_be_revalidated():
    config = recipe("tiny")
    assert not config.is_locked
    assert validate(config) is config and config.is_locked
    with pytest.raises(AttributeError):
        config.model.new_key = 1
    config.model.communication = "no_comm"
    config.model.num_memory_tokens = 0
    validate(config)
    config.inference.window_stride = 9
    with pytest.raises(UserError, match="config.inference.window_stride"):
        validate(config)


def test_overrides_keep_types():
    config = recipe("tiny")
    apply_override(config, "train.lr=1")  # an int where a float is expected
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    apply_override(config, "data.train_short_sides=[96, 128]")
    assert config.data.train_short_sides == (96, 128)
    apply_override(config, "data.train_short_sides=96")
    assert config.data.train_short_sides == (96,)
    apply_override(config, "config.model.communication=no_comm")
    assert config.model.communication == "no_comm"
    with pytest.raises(UserError, match="expected True or False"):
        apply_override(config, "inference.multi_class=1")
    with pytest.raises(UserError, match="is a section"):
        apply_override(config, "model.backbone=3")
    with pytest.raises(UserError, match="no key 'nope' in config.model"):
        apply_override(config, "model.nope=3")


def test_both_override_forms_on_the_command_line(capsys):
    code = cli.main(["summary", "--config", "tiny", "--config.model.communication",
                     "no_comm", "--config.model.num_memory_tokens=0", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and '"communication": "no_comm"' in out
    code = cli.main(["summary", "--config", "tiny", "--config.model.dtype"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "error: --config.model.dtype: needs a value (--config.KEY=VALUE or --config.KEY VALUE)")


def test_json_round_trip_gives_the_same_config():
    config = load_config("toy", ["model.communication=no_comm"])
    again = config_from_json(config.to_json(), "config.json")
    assert again.to_dict() == config.to_dict()
    with pytest.raises(UserError, match="config.json: unknown key config.model.speed"):
        config_from_json('{"model": {"speed": 1}}', "config.json")


def test_library_code_reads_config_keys_without_fallback_defaults():
    """Defaults live in configs/base.py only: no `config.get(key, default)` in ifc_jax."""
    pattern = re.compile(r"\b(config|model|data|train|inference|distributed|summary|toy|"
                         r"[a-z_]*_config)(\.\w+)*\.get\(")
    found = []
    for folder, _, files in os.walk(os.path.join(REPO, "ifc_jax")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as stream:
                    for number, line in enumerate(stream, start=1):
                        if pattern.search(line):
                            found.append(f"{os.path.relpath(path, REPO)}:{number}: {line}")
    assert found == []


def test_configdict_is_what_recipes_return():
    assert isinstance(recipe("toy"), ml_collections.ConfigDict)
