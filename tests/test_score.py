"""`python main.py score`: JSON and table output, one-line errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifc_jax import cli
from ifc_jax.evaluation.ytvis_metric import METRIC_KEYS, OCCLUSION_KEYS
from tests.test_metric import gt_json, gt_track, pred, rect, results_json

H, W = 8, 12
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_case(tmp_path, occlusion=False, predictions=True):
    exact = [rect(H, W, 0, 0, 3, 3), None]
    other = [rect(H, W, 4, 4, 8, 12), rect(H, W, 4, 4, 8, 12)]
    extra = {"occlusion": ["slight_occlusion", None]} if occlusion else {}
    gt = gt_json({1: (H, W, 2), 2: (H, W, 2)}, [1, 2],
                 [gt_track(1, 1, 1, exact, **extra), gt_track(2, 2, 2, other, **extra)])
    # Video 1: exact (TP, category 1). Video 2: a prediction of category 7 (not in the GT).
    preds = [pred(1, 1, 0.9, exact), pred(2, 7, 0.8, other)] if predictions else []
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results_json(preds)))
    return str(gt_path), str(results_path)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_output(capsys, tmp_path):
    gt, results = write_case(tmp_path)
    code, out, err = run_cli(capsys, "score", "--gt", gt, "--results", results, "--json")
    assert code == 0
    metrics = json.loads(out)
    assert list(metrics) == list(METRIC_KEYS)
    # Category 1: found (AP 1); category 2: missed (AP 0) -> mean 0.5. The category-7
    # prediction is dropped with a note on stderr.
    assert metrics["AP"] == pytest.approx(0.5, abs=1e-12) and metrics["AR100"] == 0.5
    assert metrics["APm"] == -1
    assert all(isinstance(v, float) and (v == -1 or 0 <= v <= 1) for v in metrics.values())
    assert "1 predictions" in err and "category_id not in" in err


def test_json_output_with_occlusion_keys(capsys, tmp_path):
    gt, results = write_case(tmp_path, occlusion=True)
    code, out, _ = run_cli(capsys, "score", "--gt", gt, "--results", results, "--json")
    assert code == 0
    metrics = json.loads(out)
    assert list(metrics) == list(METRIC_KEYS) + list(OCCLUSION_KEYS)
    # Both GT tracks score 0.25: in slight [0, .25] and moderate [.25, .5] (inclusive ranges),
    # not in heavy [.5, 1], which is undefined.
    assert metrics["AP_slight"] == metrics["AP_moderate"] == metrics["AP"]
    assert metrics["AP"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["AP_heavy"] == metrics["AR_heavy"] == -1


def test_empty_results_score_zero(capsys, tmp_path):
    gt, results = write_case(tmp_path, predictions=False)
    code, out, err = run_cli(capsys, "score", "--gt", gt, "--results", results, "--json")
    assert code == 0
    metrics = json.loads(out)
    assert metrics["AP"] == 0 and metrics["AR1"] == 0 and metrics["APl"] == -1
    assert "2 of 2 videos" in err


def test_table_output(capsys, tmp_path):
    gt, results = write_case(tmp_path)
    code, out, _ = run_cli(capsys, "score", "--gt", gt, "--results", results)
    assert code == 0
    lines = out.splitlines()
    assert "2 videos, 2 categories, 1 predictions" in lines[0]
    rows = {line.split()[0]: line.split()[1] for line in lines[3:]}
    assert list(rows) == list(METRIC_KEYS)
    assert rows["AP"] == "0.5000" and rows["APm"] == "-1"


def test_bad_inputs_give_one_error_line(capsys, tmp_path):
    gt, results = write_case(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    other_videos = tmp_path / "other.json"
    entries = json.loads(Path(results).read_text())
    entries[0]["video_id"] = 42
    other_videos.write_text(json.dumps(entries))
    short = tmp_path / "short.json"
    entries = json.loads(Path(results).read_text())
    entries[1]["segmentations"] = entries[1]["segmentations"][:1]
    short.write_text(json.dumps(entries))
    cases = [
        (["--gt", gt, "--results", str(broken)], [str(broken), "malformed JSON"]),
        (["--gt", str(broken), "--results", results], [str(broken), "malformed JSON"]),
        (["--gt", gt, "--results", str(other_videos)], [str(other_videos), "video_id 42"]),
        (["--gt", gt, "--results", str(short)], [str(short), "1 segmentations", "2 frames"]),
        (["--gt", gt, "--results", str(tmp_path / "none.json")], ["none.json", "not found"]),
    ]
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    cases.append((["--gt", gt, "--results", str(nested)], [str(nested), "too deeply"]))
    for name, frame, needle in (
            ("empty_polygon", [[]], "pycocotools cannot read"),
            ("odd_polygon", [[1, 2, 3]], "even number of coordinates"),
            ("negative_rle", {"size": [H, W], "counts": [-5, 5 + H * W]}, "negative")):
        bad_gt = json.loads(Path(gt).read_text())
        bad_gt["annotations"][0]["segmentations"][0] = frame
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad_gt))
        cases.append((["--gt", str(path), "--results", results], [str(path), needle]))
    for argv, needles in cases:
        code, out, err = run_cli(capsys, "score", *argv, "--json")
        lines = err.strip().splitlines()
        assert code == 2 and out == ""
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert all(needle in lines[0] for needle in needles), (lines[0], needles)


def test_main_py_end_to_end(tmp_path):
    gt, results = write_case(tmp_path)
    proc = subprocess.run([sys.executable, "main.py", "score", "--gt", gt, "--results",
                           results, "--json"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert np.isclose(json.loads(proc.stdout)["AP"], 0.5)


def test_per_category_json(capsys, tmp_path):
    gt, results = write_case(tmp_path)
    code, out, _ = run_cli(capsys, "score", "--gt", gt, "--results", results, "--json",
                           "--per-category")
    assert code == 0
    payload = json.loads(out)
    assert list(payload) == [*METRIC_KEYS, "per_category"]
    # Category 1 found exactly (AP 1), category 2 missed (AP 0); the summary is their mean.
    # (1 within rounding: precision is TP / (TP + FP + eps), as upstream.)
    assert [(c["id"], c["name"]) for c in payload["per_category"]] == [(1, "c1"), (2, "c2")]
    assert [c["AP"] for c in payload["per_category"]] == pytest.approx([1.0, 0.0], abs=1e-12)
    assert payload["AP"] == pytest.approx(0.5, abs=1e-12)
    code, out, _ = run_cli(capsys, "score", "--gt", gt, "--results", results, "--json")
    assert "per_category" not in json.loads(out)  # only when asked


def test_per_category_table_and_undefined_category(capsys, tmp_path):
    gt, results = write_case(tmp_path)
    content = json.loads(Path(gt).read_text())
    content["categories"].append({"id": 3, "name": "no ground truth"})
    Path(gt).write_text(json.dumps(content))
    code, out, _ = run_cli(capsys, "score", "--gt", gt, "--results", results, "--per-category")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("AP per category (IoU 0.50:0.95, area all, 100 detections):")
    rows = [line.split() for line in lines[start + 3:]]
    assert rows == [["1", "c1", "1.0000"], ["2", "c2", "0.0000"],
                    ["3", "no", "ground", "truth", "-1", "(undefined)"]]
    assert "0.5000" in out  # the summary table is still there, AP over categories 1 and 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_category_ap_matches_an_independent_computation(seed):
    """Each category's AP equals the independent reference metric's AP of the same case cut
    down to that category alone; the summary AP is the mean over categories with GT."""
    from ifc_jax.evaluation.ytvis_metric import evaluate, parse_ground_truth, parse_results
    from tests.test_metric import random_case, reference_metrics

    videos, category_ids, gts, preds = random_case(seed)
    gt = parse_ground_truth(gt_json(videos, category_ids, gts), "gt")
    evaluation = evaluate(gt, parse_results(results_json(preds), gt, "results"))
    assert sorted(evaluation.per_category_ap) == sorted(category_ids)
    for category in category_ids:
        alone = reference_metrics(list(videos), [category],
                                  [g for g in gts if g["category_id"] == category],
                                  [p for p in preds if p["category_id"] == category])
        assert evaluation.per_category_ap[category] == pytest.approx(alone["AP"], abs=1e-9)
    defined = [ap for ap in evaluation.per_category_ap.values() if ap > -1]
    assert len(defined) >= 2 and any(0 < ap < 1 for ap in defined)  # not degenerate
    assert np.mean(defined) == pytest.approx(evaluation.metrics["AP"], abs=1e-12)
