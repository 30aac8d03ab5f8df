r"""Draws the README's demo picture: ground truth above, the demo's tracks below.

  .venv/bin/python docs/figures/demo_output.py [WORKDIR] [OUTPUT.png]

WORKDIR is a finished `python main.py demo` run (default workdirs/demo): its
demo_video/results.json holds the tracks of the val video the demo rendered. Frames and ground
truth come from data/toy. Frames are enlarged 3x (nearest) before drawing so labels stay
legible. Tracks scoring below 0.3 are not drawn.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

from ifc_jax.data.masks import decode_rle, decode_segmentation  # noqa: E402
from ifc_jax.data.toy import CLASSES  # noqa: E402
from ifc_jax.visualize import draw_overlay, evenly_spaced, track_colour  # noqa: E402

MIN_SCORE = 0.3
ENLARGE = 3
COLUMNS = 5


def _enlarge(image: np.ndarray) -> np.ndarray:
    return image.repeat(ENLARGE, axis=0).repeat(ENLARGE, axis=1)


def _read_json(path: str):
    with open(path) as stream:
        return json.load(stream)


def draw(workdir: str, output: str) -> None:
    names = {c.category_id: c.name for c in CLASSES}
    results = _read_json(os.path.join(workdir, "demo_video", "results.json"))
    ground_truth = _read_json(os.path.join(REPO_ROOT, "data", "toy", "valid.json"))
    # The demo renders the val video with the most tracks; its results name no video, so find
    # it by frame count among the videos with that many tracks.
    num_frames = len(results[0]["segmentations"])
    tracks_per_video = {}
    for annotation in ground_truth["annotations"]:
        tracks_per_video.setdefault(annotation["video_id"], []).append(annotation)
    candidates = [v for v in ground_truth["videos"] if v["length"] == num_frames]
    video = max(candidates, key=lambda v: len(tracks_per_video.get(v["id"], [])))
    frames_dir = os.path.join(REPO_ROOT, "data", "toy", "valid", "JPEGImages")
    shown = [entry for entry in results if entry["score"] >= MIN_SCORE]
    rows = []
    for row in ("gt", "pred"):
        tiles = []
        for t in evenly_spaced(num_frames, COLUMNS):
            frame = np.asarray(Image.open(os.path.join(frames_dir, video["file_names"][t]))
                               .convert("RGB"))
            masks = []
            if row == "gt":
                for k, annotation in enumerate(tracks_per_video[video["id"]]):
                    segmentation = annotation["segmentations"][t]
                    mask = decode_segmentation(segmentation, video["height"], video["width"])
                    if mask is not None:
                        masks.append((_enlarge(mask), track_colour(k),
                                      names[annotation["category_id"]]))
            else:
                for k, entry in enumerate(shown):
                    masks.append((_enlarge(decode_rle(entry["segmentations"][t])),
                                  track_colour(k + 7),
                                  f"{names[entry['category_id']]} {entry['score']:.2f}"))
            tile = draw_overlay(_enlarge(frame), masks)
            tiles.append(np.pad(tile, ((4, 4), (4, 4), (0, 0)), constant_values=255))
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(output)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    draw(arguments[0] if arguments else os.path.join(REPO_ROOT, "workdirs", "demo"),
         arguments[1] if len(arguments) > 1 else os.path.join(REPO_ROOT, "docs", "images",
                                                                "demo_output.png"))
