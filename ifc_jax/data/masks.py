"""Per-frame segmentation encodings of the YouTube-VIS / OVIS / COCO formats.

A frame's `segmentation` in a YouTube-VIS annotation is one of:
  * compressed RLE:    {"size": [H, W], "counts": "<LEB128 string>"}
  * uncompressed RLE:  {"size": [H, W], "counts": [n0, n1, ...]} (column-major runs, zeros first)
  * polygons:          [[x1, y1, x2, y2, ...], ...] in pixel-corner coordinates
  * absent:            null (also `{}` and `[]`, which the official evaluator treats as absent)

`decode_segmentation` turns any of them into a boolean (H, W) mask; `encode_mask` writes a
mask in a chosen encoding. Every encoding written here decodes back to exactly the same
pixels (polygons are written as pixel-exact rectangles, see `mask_to_polygons`).

This is the one module that calls pycocotools' RLE codec: results.json masks (`encode_rle`,
`empty_rle`), overlays (`decode_rle`) and the metric (`to_compressed_rle`, `rle_areas`,
`rle_boxes`, `rle_intersection_area`) all go through it. Compressed RLEs here carry `counts`
as a str (JSON-ready) or bytes (pycocotools' own); every function accepts both.
No TensorFlow here: the reader must work on hosts without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

ENCODINGS = ("rle", "uncompressed_rle", "polygon")


class SegmentationFormatError(ValueError):
    """A segmentation entry that is not one of the accepted encodings, or has the wrong size.

    `index`: the position of the bad entry when many were checked at once, else None.
    """

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message)
        self.index = index


def is_absent(segmentation: Any) -> bool:
    """True for the entries that mean "object not in this frame": null, {} and []."""
    return segmentation is None or (isinstance(segmentation, dict | list) and not segmentation)


def segmentation_kind(segmentation: Any) -> str:
    """Names the encoding of one frame entry: 'absent', 'rle', 'uncompressed_rle', 'polygon'.

    Raises SegmentationFormatError for anything else.
    """
    if is_absent(segmentation):
        return "absent"
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise SegmentationFormatError("an RLE needs both 'size' and 'counts'")
        counts = segmentation["counts"]
        if isinstance(counts, str | bytes):
            return "rle"
        if isinstance(counts, list):
            return "uncompressed_rle"
        raise SegmentationFormatError(
            f"RLE 'counts' must be a string or a list, not {type(counts).__name__}"
        )
    if isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation):
        return "polygon"
    raise SegmentationFormatError(
        f"expected RLE (a dict), polygons (a list of lists) or null, "
        f"got {type(segmentation).__name__}"
    )


def rle_size(segmentation: dict) -> tuple[int, int]:
    """The (height, width) an RLE declares."""
    size = segmentation["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2):
        raise SegmentationFormatError(f"RLE 'size' must be [height, width], got {size!r}")
    return int(size[0]), int(size[1])


def compressed_rle_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths of a COCO compressed RLE string, int64 (n,); SegmentationFormatError if bad.

    The string is validated here because pycocotools does not: it decodes an empty string to
    uninitialised memory and aborts the process on some non-ASCII input. Format: each run is
    one or more characters '0'..'o' (value c - 48) carrying 5 bits each, low bits first;
    bit 0x20 means "more characters follow", bit 0x10 of the last one is the sign; from the
    fourth run on, each value is stored as the difference to the run two places before.
    """
    return compressed_rle_runs([counts])[0]


def compressed_rle_runs(counts: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """`compressed_rle_counts` of many strings at once, in numpy passes over all their runs:
    (run lengths int64 (R,) of all strings in order, the string index (R,) of each). A bad
    string raises SegmentationFormatError with its position as `.index`."""
    raws = [c.encode() if isinstance(c, str) else bytes(c) for c in counts]
    if not raws:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lengths = np.fromiter(map(len, raws), np.int64, len(raws))
    string_last = np.cumsum(lengths) - 1
    values = np.frombuffer(b"".join(raws), dtype=np.uint8) - np.uint8(48)  # wraps below '0'
    bad = values > 63
    if (lengths == 0).any() or bad.any():
        index = np.argmin(lengths) if (lengths == 0).any() else np.searchsorted(
            string_last, np.argmax(bad))
        raise SegmentationFormatError("compressed RLE counts must be a non-empty string of "
                                      "characters '0'..'o'", int(index))
    more = (values & 0x20) != 0
    if more[string_last].any():  # so every string ends a number: none spans two strings
        raise SegmentationFormatError("compressed RLE counts end in the middle of a number",
                                      int(np.argmax(more[string_last])))
    last = np.flatnonzero(~more)
    first = np.empty_like(last)
    first[0], first[1:] = 0, last[:-1] + 1
    length = last - first + 1
    if length.max() > 12:  # > 60 bits: not a count any real mask has
        raise SegmentationFormatError(
            "compressed RLE counts hold an impossibly large number",
            int(np.searchsorted(string_last, last[np.argmax(length)])))
    runs = (values[first] & 0x1F).astype(np.int64)
    for position in range(1, int(length.max())):  # 5 more bits per character, low first
        longer = np.flatnonzero(length > position)
        runs[longer] |= (values[first[longer] + position] & 0x1F).astype(np.int64) << (
            5 * position)
    negative = np.flatnonzero(values[last] & 0x10)
    runs[negative] -= np.int64(1) << (5 * length[negative])
    # Undo the differences: within a string, runs 1, 3, 5, ... and 2, 4, ... are running
    # sums (run 0 stands alone).
    runs_per_string = np.diff(np.searchsorted(last, string_last, side="right"), prepend=0)
    string_of_run = np.repeat(np.arange(len(raws)), runs_per_string)
    in_string = np.arange(runs.size) - np.repeat(np.cumsum(runs_per_string) - runs_per_string,
                                                 runs_per_string)
    for parity in (1, 0):
        chosen = np.flatnonzero(((in_string & 1) == parity) & (in_string > 0))
        if chosen.size:
            per_string = np.bincount(string_of_run[chosen], minlength=len(raws))
            sums = np.cumsum(runs[chosen])
            before = np.repeat(np.cumsum(per_string) - per_string, per_string)
            runs[chosen] = sums - (sums[before] - runs[chosen][before])
    return runs, string_of_run


def check_run_totals(runs: np.ndarray, owner: np.ndarray, count: int, height: int,
                     width: int) -> None:
    """Each of `count` RLEs must have runs >= 0 that cover a height x width frame exactly.

    runs: int64 (R,) run lengths of all RLEs in order; owner: int64 (R,) the RLE index of each
    run (as `compressed_rle_runs` returns them). Raises SegmentationFormatError with the first
    bad RLE's position as `.index`.
    """
    negative = np.flatnonzero(runs < 0)
    if negative.size:
        raise SegmentationFormatError("RLE counts must not be negative",
                                      int(owner[negative[0]]))
    # Float sums are exact far past any frame size, and with no negative run a huge one
    # cannot round down onto height*width.
    totals = np.bincount(owner, weights=runs, minlength=count)
    wrong = np.flatnonzero(totals != height * width)
    if wrong.size:
        raise SegmentationFormatError(
            f"RLE counts sum to {int(totals[wrong[0]])}, not {height}x{width} = "
            f"{height * width}", int(wrong[0]))


def check_segmentation(segmentation: Any, height: int, width: int) -> str:
    """Validates one frame entry against the video size without decoding it.

    Returns its kind (see `segmentation_kind`). Raises SegmentationFormatError when the entry
    is malformed or an RLE declares a size other than (height, width).
    """
    kind = segmentation_kind(segmentation)
    if kind in ("rle", "uncompressed_rle"):
        size = rle_size(segmentation)
        if size != (height, width):
            raise SegmentationFormatError(
                f"mask size {size[0]}x{size[1]} differs from the video's {height}x{width}"
            )
        counts = segmentation["counts"]
        if kind == "rle":
            runs = compressed_rle_counts(counts)
        elif all(isinstance(c, int) and not isinstance(c, bool) and abs(c) <= height * width
                 for c in counts):
            runs = np.asarray(counts, dtype=np.int64)
        elif all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            # JSON integers have any size: beyond int64 numpy raises OverflowError.
            raise SegmentationFormatError(f"RLE counts must lie in 0..{height * width} "
                                          f"({height}x{width} pixels)")
        else:
            raise SegmentationFormatError("uncompressed RLE counts must be integers")
        check_run_totals(runs, np.zeros(runs.size, np.int64), 1, height, width)
    elif kind == "polygon":
        for polygon in segmentation:
            if len(polygon) % 2:
                raise SegmentationFormatError("a polygon needs an even number of coordinates")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in polygon):
                raise SegmentationFormatError("polygon coordinates must be numbers")
    return kind


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """Decodes one frame entry to a bool mask (height, width); None when absent.

    Polygons are rasterised by pycocotools at (height, width). Polygons with fewer than three
    points enclose no pixel and are skipped (pycocotools would misread a 2-point polygon as a
    box).
    """
    kind = check_segmentation(segmentation, height, width)
    if kind == "absent":
        return None
    if kind == "polygon":
        polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        segmentation = polygons
    return decode_rle(to_compressed_rle(segmentation, height, width))


def to_compressed_rle(segmentation: dict | list, height: int, width: int) -> dict:
    """A present frame entry (not null) as a compressed RLE of a (height, width) mask.

    A compressed RLE is returned as it is; an uncompressed RLE and polygons are converted by
    pycocotools (counts as bytes), polygons merged into one mask. No validation and no
    filtering: polygons are read exactly as the official evaluator reads them (pycocotools
    takes a list whose first polygon has 4 numbers for boxes); `decode_segmentation` is the
    checked reader.
    """
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), str | bytes):
            return segmentation
        return mask_util.frPyObjects(segmentation, height, width)
    return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))


def _pycocotools_rle(rle: dict) -> dict:
    """A compressed RLE with bytes counts and a list size, as pycocotools' C code expects."""
    counts = rle["counts"]
    return {"size": list(rle["size"]),
            "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}


def decode_rle(rle: dict) -> np.ndarray:
    """bool (H, W) mask of a COCO RLE {"size": [H, W], "counts": str, bytes or list}.

    A list of counts is an uncompressed RLE (see the module docstring); nothing is validated
    (`decode_segmentation` is the checked reader for user files).
    """
    if isinstance(rle["counts"], list):
        rle = mask_util.frPyObjects(rle, *rle_size(rle))
    return mask_util.decode(_pycocotools_rle(rle)).astype(bool)


def encode_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a (H, W) binary mask: {"size": [H, W], "counts": utf-8 str}
    (JSON-ready). ValueError for an array that is not 2-D."""
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    return json_rles([mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))],
                     *mask.shape)[0]


def rles_from_runs(runs: Sequence[Sequence[int] | np.ndarray], height: int, width: int
                   ) -> list[dict]:
    """JSON-ready compressed RLEs of (height, width) masks from each mask's run lengths
    (off, on, ... column-major from the first pixel), compressed by pycocotools."""
    if not runs:  # pycocotools cannot take an empty list
        return []
    return json_rles(mask_util.frPyObjects(
        [{"size": [height, width], "counts": r} for r in runs], height, width), height, width)


def json_rles(encoded: Sequence[dict], height: int, width: int) -> list[dict]:
    """pycocotools' compressed RLEs (bytes counts) of (height, width) masks -> JSON-ready
    ones ({"size": [H, W], "counts": utf-8 str})."""
    return [{"size": [int(height), int(width)], "counts": rle["counts"].decode("utf-8")}
            for rle in encoded]


def empty_rle(height: int, width: int) -> dict:
    """The compressed RLE of an all-zero (height, width) mask: its one run of zeros,
    compressed (scanning a 720p frame of zeros for it took a millisecond per video)."""
    if height < 0 or width < 0:
        raise ValueError(f"negative mask size {height}x{width}")
    return rles_from_runs([[height * width]], height, width)[0]


def rle_areas(rles: Sequence[dict]) -> np.ndarray:
    """(N,) int64 set-pixel counts of N compressed RLEs; (0,) for none."""
    if not rles:  # pycocotools cannot take an empty list
        return np.zeros(0, np.int64)
    return mask_util.area([_pycocotools_rle(rle) for rle in rles]).astype(np.int64)


def rle_boxes(rles: Sequence[dict]) -> np.ndarray:
    """(N, 4) float64 COCO boxes [x, y, width, height] of N compressed RLEs (zeros if empty)."""
    if not rles:
        return np.zeros((0, 4))
    return mask_util.toBbox([_pycocotools_rle(rle) for rle in rles])


def rle_intersection_area(first: dict, second: dict) -> int:
    """Pixels set in both of two compressed RLEs of the same size."""
    both = mask_util.merge([_pycocotools_rle(first), _pycocotools_rle(second)], intersect=True)
    return int(mask_util.area(both))


def encode_uncompressed_rle(mask: np.ndarray) -> dict:
    """Uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    # Positions where the value changes; a leading False makes the first run count zeros.
    padded = np.concatenate([[False], flat])
    change = np.flatnonzero(padded[1:] != padded[:-1])
    boundaries = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(boundaries).tolist()
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons whose pycocotools rasterisation is exactly `mask`.

    Each maximal horizontal run of pixels is grown downwards over the following rows that have
    the very same run, and written as one rectangle with corners on pixel corners: pycocotools
    fills exactly the pixels inside such a rectangle. Not the prettiest outline, but lossless.
    """
    mask = np.asarray(mask, dtype=bool)
    polygons: list[list[float]] = []
    open_runs: dict[tuple[int, int], int] = {}  # (start, end) -> first row
    height = mask.shape[0]
    for row in range(height + 1):
        runs: set[tuple[int, int]] = set()
        if row < height:
            edges = np.diff(np.concatenate([[0], mask[row].astype(np.int8), [0]]))
            runs = set(zip(np.flatnonzero(edges == 1).tolist(),
                           np.flatnonzero(edges == -1).tolist(), strict=True))
        for run in sorted(set(open_runs) - runs):
            top, (x0, x1) = open_runs.pop(run), run
            polygons.append([float(v) for v in (x0, top, x1, top, x1, row, x0, row)])
        for run in runs - set(open_runs):
            open_runs[run] = row
    return polygons


def encode_mask(mask: np.ndarray, encoding: str = "rle") -> Any:
    """Encodes a (H, W) mask; an empty mask becomes None (absent), as in YouTube-VIS files."""
    if not np.any(mask):
        return None
    if encoding == "rle":
        return encode_rle(mask)
    if encoding == "uncompressed_rle":
        return encode_uncompressed_rle(mask)
    if encoding == "polygon":
        return mask_to_polygons(mask)
    raise ValueError(f"unknown mask encoding {encoding!r}; expected one of {ENCODINGS}")


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO box [x, y, width, height] of the set pixels of a non-empty (H, W) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]),
            float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
