r"""The tiny IFC trained on the built-in toy dataset, on a CPU.

The toy dataset (ifc_jax/data/toy.py) is generated under data/toy on first use. This is the
recipe `python main.py demo` trains; it also runs by hand:

  python main.py train --config configs/toy.py --workdir workdirs/toy
  python main.py train --config configs/toy.py --workdir workdirs/toy_nocomm \
      --config.model.communication=no_comm
"""

import ml_collections

from configs import tiny


def get_config() -> ml_collections.ConfigDict:
    config = tiny.get_config()
    # From scratch on a small dataset: a larger lr and a looser clip than the fine-tuning
    # recipe (1e-4, 0.01), decayed for the last quarter.
    config.train.batch_size = 8
    config.train.num_steps = 400
    config.train.lr = 3e-4
    config.train.lr_decay_steps = (300,)
    config.train.grad_clip_norm = 0.1
    config.train.log_every = 10
    config.train.checkpoint_every = 100
    config.train.init_exclude = ()
    return config
