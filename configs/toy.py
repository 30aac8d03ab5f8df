r"""The demo's recipe: a small IFC trained on the built-in toy dataset, on a CPU.

The toy dataset (ifc_jax/data/toy.py, 96x144 frames) is generated under data/toy on first
use. Frames are upsampled to a short side of 128 so that objects span several cells of the
stride-8 mask grid (at 64 px they cover 2-4 cells and mask AP stays near 0). This is what
`python main.py demo` trains; it also runs by hand:

  python main.py train --config configs/toy.py --workdir workdirs/toy
  python main.py evaluate --config configs/toy.py --workdir workdirs/toy
  python main.py train --config configs/toy.py --workdir workdirs/toy_nocomm \
      --config.model.communication=no_comm
"""

import ml_collections

from configs import tiny


def get_config() -> ml_collections.ConfigDict:
    config = tiny.get_config()
    model = config.model
    model.hidden_dim = 64
    model.dim_feedforward = 128
    model.backbone.width = 16
    data = config.data
    data.train_short_sides = (128,)
    data.train_max_size = 192
    data.test_short_side = 128
    data.test_max_size = 192
    data.pad_height = 128  # 96x144 toy frames at short side 128: 128x192, no padding
    data.pad_width = 192
    data.toy.num_train = 400  # generating is cheap; more videos curb over-fitting
    # From scratch on a small dataset: a larger lr and a looser clip than the fine-tuning
    # recipe (1e-4, 0.01), decayed for the last fifth.
    config.train.batch_size = 8
    config.train.num_steps = 2000
    config.train.lr = 3e-4
    config.train.lr_decay_steps = (1600,)
    config.train.grad_clip_norm = 0.1
    config.train.log_every = 50
    config.train.checkpoint_every = 200
    config.train.init_exclude = ()
    return config
