"""Count a model's parameters per component without allocating weights."""

import math
import os

import keras

from keras_mirasol.models.pretrained_parts import is_pretrained_part
from keras_mirasol.models.shape_only import shape_only

COMPONENTS = (
    "video_encoder",
    "audio_encoder",
    "combiner",
    "av_decoder",
    "latent_prediction",
    "text_decoder",
)


def _builder(model):
    """A function building the `MirasolBackbone` that `model` names."""
    from keras_mirasol.models.backbone import MirasolBackbone
    from keras_mirasol.models.presets import backbone_presets

    if isinstance(model, dict):
        config = dict(model)
        config.pop("name", None)
        return lambda: MirasolBackbone(**config)
    if isinstance(model, str) and model in backbone_presets:
        config = dict(backbone_presets[model]["config"])
        return lambda: MirasolBackbone(**config)
    if isinstance(model, str) and os.path.isdir(model):
        return lambda: MirasolBackbone.from_preset(model, load_weights=False)
    raise ValueError(
        f"Unknown preset {model!r}: give a built-in preset "
        f"({sorted(backbone_presets)}), a folder written by "
        "`save_to_preset()`, a `MirasolBackbone` config dict or a "
        "`MirasolBackbone`."
    )


def _size(weights):
    return sum(math.prod(int(n) for n in w.shape) for w in weights)


def _breakdown(backbone):
    rows = []
    for name in COMPONENTS:
        layer = getattr(backbone, name, None)
        weights = [] if layer is None else layer.weights
        pretrained = []
        origin = "-" if layer is None else type(layer).__name__
        if layer is not None and is_pretrained_part(layer):
            pretrained = layer.backbone.weights
            origin = f"{type(layer.backbone).__name__} (keras-hub)"
        rows.append(
            dict(
                component=name,
                origin=origin,
                parameters=_size(weights),
                pretrained=_size(pretrained),
                trainable=_size(
                    [] if layer is None else layer.trainable_weights
                ),
            )
        )
    rows.append(
        dict(
            component="total",
            origin="",
            parameters=_size(backbone.weights),
            pretrained=sum(row["pretrained"] for row in rows),
            trainable=_size(backbone.trainable_weights),
        )
    )
    return rows


def parameter_breakdown(model):
    """Parameters per component: how many, pretrained, and trainable.

    `model` is built shape-only (`shape_only.shape_only`): every variable
    gets its shape but no value, so a 3B preset counts on a laptop, and
    nothing is left behind in this process. A built `MirasolBackbone` is
    counted as it is, its frozen parts and LoRA adapters included.

    Args:
        model: a built-in preset name, a folder written by
            `save_to_preset()`, a `MirasolBackbone` config dict, or a
            `MirasolBackbone`.

    Returns:
        list of dicts, one per component of `COMPONENTS` then `"total"`:
        `component`, `origin` (the layer class, or the keras-hub backbone
        class of a pretrained part), `parameters`, `pretrained` (the
        keras-hub backbone's own weights inside the component; the rest
        is new: projections, gated cross-attention) and `trainable`.

    Example:
    ```python
    rows = keras_mirasol.models.parameter_breakdown("mirasol_tiny")
    rows[-1]["parameters"] == rows[-1]["trainable"]  # True
    ```
    """
    if isinstance(model, keras.layers.Layer):
        return _breakdown(model)
    with shape_only():
        return _breakdown(_builder(model)())


def count_parameters(model):
    """Count parameters of a preset or config without allocating weights.

    Args:
        model: a built-in preset name, a folder written by
            `save_to_preset()`, a `MirasolBackbone` config dict, or a
            `MirasolBackbone` (`parameter_breakdown`).

    Returns:
        dict of component name -> int, plus `"total"`.

    Example:
    ```python
    counts = keras_mirasol.models.count_parameters("mirasol_3b")
    counts["total"] / 1e9  # about 3.0
    ```
    """
    return {
        row["component"]: row["parameters"]
        for row in parameter_breakdown(model)
    }


def format_counts(counts):
    """A table of per-component counts in millions.

    Args:
        counts: dict from `count_parameters`, or the rows of
            `parameter_breakdown` (which add the pretrained and trainable
            columns).

    Returns:
        str.
    """
    if isinstance(counts, dict):
        lines = [f"{'component':<20}{'parameters':>16}"]
        for name, value in counts.items():
            lines.append(f"{name:<20}{value:>16,}  ({value / 1e6:,.1f}M)")
        return "\n".join(lines)
    lines = [
        f"{'component':<20}{'parameters':>16}{'pretrained':>14}"
        f"{'trainable':>14}  origin"
    ]
    for row in counts:
        lines.append(
            f"{row['component']:<20}{row['parameters']:>16,}"
            f"{row['pretrained']:>14,}{row['trainable']:>14,}  "
            f"{row['origin']}"
        )
    return "\n".join(lines)
