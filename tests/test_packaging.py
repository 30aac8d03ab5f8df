"""What `pip install .` installs: every package of ifc_jax, the recipes, the entry points."""

import os
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as stream:
        return tomllib.load(stream)


def test_every_package_of_the_tree_is_installed():
    setuptools = _pyproject()["tool"]["setuptools"]
    in_tree = {os.path.relpath(folder, REPO).replace(os.sep, ".")
               for folder, _, files in os.walk(os.path.join(REPO, "ifc_jax"))
               if "__init__.py" in files}
    assert set(setuptools["packages"]) == in_tree | {"ifc_jax.configs"}
    assert setuptools["package-dir"] == {"ifc_jax.configs": "configs"}
    assert os.path.isfile(os.path.join(REPO, "configs", "__init__.py"))


def test_entry_points_extras_and_licence():
    project = _pyproject()["project"]
    assert project["scripts"] == {"ifc-jax": "ifc_jax.cli:main"}
    assert project["license"] == "Apache-2.0"
    extras = project["optional-dependencies"]
    assert {"tpu", "cuda", "data", "dev"} <= set(extras)
    names = {extra: {requirement.split(">")[0].split("[")[0] for requirement in extras[extra]}
             for extra in extras}
    # what `train` checks for (train/loop.py) is in the data extra, and dev has all of data
    assert {"tensorflow-cpu", "tensorflow-datasets", "clu", "tensorboard"} <= names["data"]
    assert names["data"] <= names["dev"]
    base = " ".join(project["dependencies"])
    for heavy in ("tensorflow", "clu"):  # inference, FLOPs and conversion run without them
        assert heavy not in base
    with open(os.path.join(REPO, "LICENSE"), encoding="utf-8") as stream:
        assert "Apache License" in stream.read(200)
