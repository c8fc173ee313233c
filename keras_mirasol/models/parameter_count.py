"""Count a configuration's parameters without allocating its weights."""

import json
import os
import subprocess
import sys

import numpy as np

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


def abstract_parameter_count(config):
    """Per-component parameter counts from an abstract build.

    The backbone is built inside `keras.StatelessScope(
    initialize_variables=False)`: every variable gets its shape but no
    value, so no weight memory is allocated. Those variables stay
    registered for deferred initialisation in this process, so call this
    only in a throwaway process; `count_parameters` does that for you.

    Args:
        config: dict. `MirasolBackbone` constructor arguments.

    Returns:
        dict of component name -> int, plus `"total"`.
    """
    import keras

    from keras_mirasol.models.backbone import MirasolBackbone

    with keras.StatelessScope(initialize_variables=False):
        backbone = MirasolBackbone(**config)
        counts = {}
        for name in COMPONENTS:
            layer = getattr(backbone, name)
            weights = [] if layer is None else layer.weights
            counts[name] = int(sum(np.prod(w.shape) for w in weights))
        counts["total"] = int(sum(np.prod(w.shape) for w in backbone.weights))
    return counts


def count_parameters(preset_or_config):
    """Count parameters of a preset or config without allocating weights.

    Runs `abstract_parameter_count` in a child Python process with the
    same Keras backend, so nothing is left behind in this one.

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
    config = _resolve_config(preset_or_config)
    result = subprocess.run(
        [sys.executable, "-m", "keras_mirasol.models.parameter_count"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            "Counting parameters failed in the child process:\n"
            + result.stderr[-4000:]
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def format_counts(counts):
    """A table of per-component counts in millions."""
    lines = [f"{'component':<20}{'parameters':>16}"]
    for name, value in counts.items():
        lines.append(f"{name:<20}{value:>16,}  ({value / 1e6:,.1f}M)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(abstract_parameter_count(json.loads(sys.stdin.read()))))
