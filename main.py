"""ifc-jax command line. `python main.py --help` lists the subcommands.

Examples:
  python main.py flops                       # the paper's encoder FLOPs table, ours beside it
  python main.py summary --config configs/ifc_r50_ytvis19.py --json
"""

import sys

from ifc_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
