r"""The demo's recipe: a small IFC trained from scratch on the built-in toy dataset, on a CPU.

The toy dataset (ifc_jax/data/toy.py, 96x144 frames) is generated under data/toy on first
use. Frames are upsampled to a short side of 192: the masks come out at stride 8, and at 128
px the best stride-8 mask a toy object can get has a mean IoU of only 0.74 with its ground
truth (0.84 at 192), which caps mask AP whatever the training. The backbone is kept narrow to
pay for the pixels. Training from scratch rather than fine-tuning: every stage and BN-free
layer trains (freeze_at 0) at the full lr, with a warm-up, no dropout and the on-device
matcher (faster than scipy callbacks on a CPU). This is what `python main.py demo` trains; it
also runs by hand:

  python main.py train --config configs/toy.py --workdir workdirs/toy
  python main.py evaluate --config configs/toy.py --workdir workdirs/toy
  python main.py train --config configs/toy.py --workdir workdirs/toy_nocomm \
      --config.model.communication=no_comm
"""

import ml_collections

from . import tiny


def get_config() -> ml_collections.ConfigDict:
    config = tiny.get_config()
    model = config.model
    model.hidden_dim = 64
    model.dim_feedforward = 128
    model.backbone.width = 8
    model.backbone.freeze_at = 0  # from scratch: nothing is pretrained, so nothing is frozen
    model.dropout = 0.0  # 2,000 steps under-fit 400 videos; no regulariser needed
    data = config.data
    data.train_short_sides = (192,)
    data.train_max_size = 288
    data.test_short_side = 192
    data.test_max_size = 288
    data.pad_height = 192  # 96x144 toy frames at short side 192: 192x288, no padding
    data.pad_width = 288
    data.toy.num_train = 400  # generating is cheap (seconds); more videos curb over-fitting
    data.toy.num_val = 48  # 16 videos made AP swing by +-0.05 between equal models
    config.train.batch_size = 8
    config.train.num_steps = 2000
    config.train.lr = 1e-3
    config.train.warmup_steps = 150
    config.train.lr_decay_steps = (1600,)
    config.train.backbone_lr_mult = 1.0
    config.train.grad_clip_norm = 0.1
    config.train.matcher = "device"
    # One loss group: every toy clip fills the 192 x 288 canvas, so this only keeps the CE
    # mean over the whole batch, as the demo has always trained (docs/training.md#loss-groups).
    config.train.loss_group_size = 0
    config.train.log_every = 50
    config.train.checkpoint_every = 200
    config.train.init_exclude = ()
    config.inference.drop_empty_tracks = True  # an all-empty track can only be a false positive
    # Confident queries with speck masks: a whole toy object of the smallest size covers
    # 190-310 px per frame (README, demo section).
    config.inference.min_track_pixels = 64
    return config
