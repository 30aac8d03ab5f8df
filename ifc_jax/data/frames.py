"""Frame decoding and resizing on the host (PIL + numpy, no TensorFlow).

Frames are decoded with PIL rather than inside the tf.data graph so that a missing or broken
JPEG is reported as one line naming the file and the video, not as a TensorFlow traceback.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ifc_jax import storage
from ifc_jax.data.ytvis import Video
from ifc_jax.io import UserError


def load_frame(video: Video, frame: int, source: str = "") -> np.ndarray:
    """Decoded RGB frame `frame` of `video`, uint8 (height, width, 3).

    `source` names the annotation file for error messages. Raises UserError when the file is
    missing, is not a readable image, or its size differs from the video's height/width.
    """
    where = f"video {video.video_id} ({video.name}){' in ' + source if source else ''}"
    if video.frames is not None:
        return np.asarray(video.frames[frame], dtype=np.uint8)
    path = video.frame_paths[frame]
    try:
        with storage.open_file(path, "rb") as stream, Image.open(stream) as image:
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"{path}: frame file not found ({where})") from None
    except (OSError, SyntaxError, ValueError) as err:
        # PIL raises UnidentifiedImageError (an OSError) for non-images and OSError for
        # truncated data; both mean the same thing to the user.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: unreadable JPEG ({reason}) ({where})") from None
    if rgb.shape[:2] != (video.height, video.width):
        raise UserError(f"{path}: frame is {rgb.shape[0]}x{rgb.shape[1]} but the annotation "
                        f"says {video.height}x{video.width} ({where})")
    return rgb


def resize_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 (H, W, 3) frame to (height, width, 3).

    PIL bilinear, as detectron2's ResizeTransform uses for uint8 images (it widens the filter
    when shrinking, i.e. antialiases).
    """
    if frame.shape[:2] == (height, width):
        return frame
    resized = Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def nearest_source_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of every output index for a nearest-neighbour resize, int (out_size,).

    Half-pixel centres: output i samples input floor((i + 0.5) * in / out), computed in exact
    integer arithmetic ((2i + 1) * in // (2 * out)) so ties never depend on float rounding.
    """
    return ((2 * np.arange(out_size) + 1) * in_size) // (2 * out_size)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool (H, W) mask to (height, width)."""
    if mask.shape == (height, width):
        return mask
    rows = nearest_source_indices(mask.shape[0], height)
    cols = nearest_source_indices(mask.shape[1], width)
    return mask[rows][:, cols]  # two 1-D gathers: several times faster than np.ix_
