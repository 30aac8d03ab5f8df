"""A trained model for inference: the config's IFC and its weights from a workdir or checkpoint."""

from __future__ import annotations

from typing import Any

import jax

from ifc_jax import storage
from ifc_jax.io import UserError
from ifc_jax.models.ifc import IFC


def load_trained_model(config: Any, weights_path: str) -> tuple[IFC, dict[str, Any]]:
    """(model, variables) from `config.model` and the latest checkpoint under `weights_path`.

    `weights_path` is a training workdir, its checkpoints/ folder or one step folder. The
    variables are placed on the default device; parameter shapes are checked against the
    config's model so a config/checkpoint mismatch fails with the offending names.
    """
    from ifc_jax.checkpoints import flat_shapes, load_variables, model_variable_shapes

    if not storage.exists(weights_path):
        raise UserError(f"{weights_path}: no such workdir or checkpoint")
    model = IFC.from_config(config.model)
    variables = load_variables(weights_path)
    expected_shapes = model_variable_shapes(model)
    found_shapes = flat_shapes(variables)
    missing = sorted(set(expected_shapes) - set(found_shapes))
    wrong = sorted(name for name in set(expected_shapes) & set(found_shapes)
                   if expected_shapes[name] != found_shapes[name])
    if missing or wrong:
        details = "; ".join(
            [f"missing {name}" for name in missing[:5]]
            + [f"{name} is {found_shapes[name]}, model wants {expected_shapes[name]}"
               for name in wrong[:5]])
        raise UserError(f"{weights_path}: checkpoint does not fit the config's model "
                        f"({len(missing)} missing, {len(wrong)} mis-shaped: {details})")
    return model, jax.device_put(variables)
