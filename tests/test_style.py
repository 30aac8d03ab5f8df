"""The code base stays ruff-clean (configuration in pyproject.toml)."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    assert ruff, "ruff is pinned in requirements.txt and must be installed"
    proc = subprocess.run([ruff, "check", "ifc_jax", "configs", "tests", "tools", "main.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
