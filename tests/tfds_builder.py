"""A TFDS build of a YouTube-VIS-format folder for the tests: TFDS's own `youtube_vis`
features and example code (`_process_example`), generated without Apache Beam.

The real builder runs the same per-video function under Beam, which cannot be installed beside
our pins (data/README.md#tfds); this one loops over the videos instead. Its manual dir is a
YouTube-VIS layout with annotated splits: train.json + train/JPEGImages and valid.json +
valid/JPEGImages (the toy dataset is one). Built datasets are read back by name from their
files, so the commands under test need no import of this module.
"""

from __future__ import annotations

import json

import tensorflow_datasets as tfds
from tensorflow_datasets.video.youtube_vis import youtube_vis

NAME = "ytvis_like"


class YtvisLike(tfds.core.GeneratorBasedBuilder):
    """`youtube_vis`'s features and examples from a manual dir in the YouTube-VIS layout."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        youtube_vis.YoutubeVisConfig(name="only_frames_with_labels",
                                     only_frames_with_labels=True),
        youtube_vis.YoutubeVisConfig(name="full"),
    ]
    _info = youtube_vis.YoutubeVis._info
    # No source folder (no checksums file to look for): TFDS's lookup of one needs the
    # importlib_resources backport, which is not installed.
    code_path = None
    MANUAL_DOWNLOAD_INSTRUCTIONS = "a folder in the YouTube-VIS layout (train.json, ...)"

    def _split_generators(self, dl_manager):
        root = dl_manager.manual_dir
        return {tfds.Split.TRAIN: self._generate_examples(root / "train.json",
                                                          root / "train" / "JPEGImages"),
                tfds.Split.VALIDATION: self._generate_examples(root / "valid.json",
                                                               root / "valid" / "JPEGImages")}

    def _generate_examples(self, annotations, all_frames):
        content = json.loads(annotations.read_text())
        tracks, videos = youtube_vis._build_annotations_index(content)
        for video_id in videos:
            yield youtube_vis._process_example(
                video_id, videos=videos,
                only_frames_with_labels=self.builder_config.only_frames_with_labels,
                all_frames=all_frames, height=None, width=None, video_id_to_tracks=tracks,
                maybe_resize_video=lambda frames: frames)


def build(manual_dir: str, data_dir: str, config: str = "only_frames_with_labels") -> str:
    """Builds `config` of the dataset from `manual_dir` into `data_dir`; returns its name."""
    builder = YtvisLike(config=config, data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return f"{NAME}/{config}"
