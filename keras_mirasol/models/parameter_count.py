"""Count a configuration's parameters without allocating its weights."""

import numpy as np

from keras_mirasol.models.shape_only import shape_only_weights

COMPONENTS = (
    "video_encoder",
    "audio_encoder",
    "combiner",
    "av_decoder",
    "latent_prediction",
    "text_decoder",
)


def _resolve_config(preset_or_config):
    from keras_mirasol.models.presets import backbone_presets

    if isinstance(preset_or_config, dict):
        return dict(preset_or_config)
    if preset_or_config not in backbone_presets:
        raise ValueError(
            f"Unknown preset {preset_or_config!r}; built-in presets are "
            f"{sorted(backbone_presets)}."
        )
    return dict(backbone_presets[preset_or_config]["config"])


def count_parameters(preset_or_config):
    """Count parameters of a preset or config without allocating weights.

    The backbone is built shape-only (`shape_only.shape_only_weights`):
    every variable gets its shape but no value, so a 3B preset counts on
    a laptop, and nothing is left behind in this process.

    Args:
        preset_or_config: str preset name or `MirasolBackbone` config dict.

    Returns:
        dict of component name -> int, plus `"total"`.

    Example:
    ```python
    counts = keras_mirasol.models.count_parameters("mirasol_3b")
    counts["total"] / 1e9  # about 3.0
    ```
    """
    from keras_mirasol.models.backbone import MirasolBackbone

    config = _resolve_config(preset_or_config)
    config.pop("name", None)
    shapes = shape_only_weights(lambda: MirasolBackbone(**config))
    sizes = {path: int(np.prod(shape)) for path, shape in shapes.items()}
    counts = {
        name: sum(n for path, n in sizes.items() if path.startswith(name + "/"))
        for name in COMPONENTS
    }
    counts["total"] = sum(sizes.values())
    return counts


def format_counts(counts):
    """A table of per-component counts in millions."""
    lines = [f"{'component':<20}{'parameters':>16}"]
    for name, value in counts.items():
        lines.append(f"{name:<20}{value:>16,}  ({value / 1e6:,.1f}M)")
    return "\n".join(lines)
