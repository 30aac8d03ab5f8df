r"""IFC, ResNet-50, YouTube-VIS 2019: the paper's recipe (docs/training.md).

Fine-tunes from COCO-pretrained IFC weights on 16 clips of T=5 frames per step, 6k steps;
evaluates near-online (T=5, stride 1). Every value is the default of configs/base.py. The
variant `:offline` evaluates with 36-frame windows (the paper's offline setting: one window
for a video of up to 36 frames).

  ifc-jax train --config ifc_r50_ytvis19 --workdir workdirs/r50_ytvis19 \
      --config.train.init_from=weights/ifc_r50_coco   # from `convert` (see below)
  ifc-jax evaluate --config ifc_r50_ytvis19 --workdir workdirs/r50_ytvis19
  ifc-jax evaluate --config configs/ifc_r50_ytvis19.py:offline --workdir workdirs/r50_ytvis19
  ifc-jax summary --config ifc_r50_ytvis19

Pretrained weights (docs/pretrained_weights.md): the released R-50 IFC checkpoint, the COCO
R-50 IFC (with --config.model.num_classes=80) and ImageNet R-50.pkl convert with this config:
  ifc-jax convert --from model_final.pth --to weights/ifc_r50_ytvis19
"""

import ml_collections

from . import base

VARIANTS = ("", "offline")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; this recipe has: offline")
    config = base.get_config()
    if variant == "offline":
        config.inference.window_frames = 36
    return config
