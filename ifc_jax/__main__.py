"""`python -m ifc_jax ARGS` is `python main.py ARGS` (and the `ifc-jax` console script)."""

import sys

from ifc_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
