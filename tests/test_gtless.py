"""A split without ground truth (a test split) has three spellings: no `annotations` key,
`"annotations": []` and `"annotations": null`. All three behave alike (the rule of
`ifc_jax.data.ytvis.has_ground_truth`): `evaluate` writes results.json and no metrics and
prints the submission hint, `score` refuses the file with one line, `train` refuses it."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from ifc_jax import cli
from ifc_jax.data.ytvis import has_ground_truth, parse_ytvis
from ifc_jax.io import UserError

FORMS = ("absent", "empty", "null")


def without_ground_truth(content: dict, form: str) -> dict:
    """`content` with its annotations removed in the given spelling."""
    content = {key: value for key, value in content.items() if key != "annotations"}
    if form != "absent":
        content["annotations"] = [] if form == "empty" else None
    return content


def labelled() -> dict:
    return {"videos": [{"id": 1, "height": 4, "width": 6, "file_names": ["v/0.jpg"]}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentations": [{"size": [4, 6], "counts": [0, 24]}],
                             "areas": [24]}]}


def test_the_rule():
    assert has_ground_truth(labelled())
    for form in FORMS:
        content = without_ground_truth(labelled(), form)
        assert not has_ground_truth(content)
        assert not parse_ytvis(content, "x.json", "", check_frame_files=False).has_annotations
    assert parse_ytvis(labelled(), "x.json", "", check_frame_files=False).has_annotations
    with pytest.raises(UserError, match="x.json: 'annotations' must be a list"):
        parse_ytvis(dict(labelled(), annotations={}), "x.json", "", check_frame_files=False)


@pytest.mark.parametrize("form", FORMS)
def test_score_refuses_a_split_without_ground_truth(form, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(without_ground_truth(labelled(), form)))
    results = tmp_path / "results.json"
    results.write_text("[]")
    code = cli.main(["score", "--gt", str(gt), "--results", str(results)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == ""
    assert lines == [f"error: {gt}: has no annotations to score against (a test split without "
                     "ground truth: submit results.json to the evaluation server, or hold out "
                     "labelled videos with `split`)"]


@pytest.fixture(scope="module")
def toy_split(tmp_path_factory):
    """A one-video toy split, its JSON in the three GT-less forms, a tiny random model."""
    from ifc_jax.config import load_config
    from ifc_jax.data.toy import generate_toy_dataset
    from ifc_jax.models.ifc import IFC

    root = str(tmp_path_factory.mktemp("gtless") / "toy")
    generate_toy_dataset(root, seed=5, num_train=1, num_val=1, min_frames=3, max_frames=3)
    with open(os.path.join(root, "valid.json"), encoding="utf-8") as stream:
        content = json.load(stream)
    assert content["annotations"], "the toy val split is labelled"
    for form in FORMS:
        with open(os.path.join(root, f"valid_{form}.json"), "w", encoding="utf-8") as stream:
            json.dump(without_ground_truth(content, form), stream)
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
    config.data.root = root
    config.data.dataset = "ytvis19"  # read the JSON files as they are (no toy regeneration)
    model = IFC.from_config(config.model)
    frames = np.zeros((1, config.data.num_frames, 64, 96, 3), np.uint8)
    variables = jax.jit(model.init)(jax.random.key(0), frames,
                                    np.zeros(frames.shape[:-1], bool))
    return config, model, variables


def test_evaluate_treats_the_three_forms_alike(toy_split, tmp_path, capsys, monkeypatch):
    from ifc_jax import api
    from ifc_jax.evaluation.evaluate import evaluate_split

    config, model, variables = toy_split
    written = {}
    for form in FORMS:
        config.data.val_json = f"valid_{form}.json"
        output = str(tmp_path / form)
        summary = evaluate_split(config, model, variables, output)
        assert summary["videos"] == 1
        assert "metrics" not in summary and "metrics_file" not in summary
        assert sorted(os.listdir(output)) == ["results.json"]  # no metrics.json, no leftovers
        with open(summary["results"], encoding="utf-8") as stream:
            written[form] = json.load(stream)
    assert written["absent"] == written["empty"] == written["null"]

    # What `evaluate` prints for such a summary: the hint, no metric table.
    monkeypatch.setattr(api, "evaluate", lambda *args, **kwargs: summary)
    code = cli.main(["evaluate", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "the split has no annotations: submit results.json to the evaluation server" in out
    assert "AP" not in out
