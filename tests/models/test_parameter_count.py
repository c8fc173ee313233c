import resource
import sys

import numpy as np
import pytest

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import count_parameters
from keras_mirasol.models.parameter_count import format_counts
from keras_mirasol.models.parameter_count import parameter_breakdown
from tests.conftest import small_config


def test_abstract_count_equals_the_built_model():
    config = small_config(combiner_type="ttm")
    counts = count_parameters(config)
    model = MirasolBackbone(**config)
    assert counts["total"] == model.count_params()
    for name in ("video_encoder", "combiner", "text_decoder"):
        assert counts[name] == model.get_layer(name).count_params()
    parts = sum(v for k, v in counts.items() if k != "total")
    assert parts == counts["total"]


@pytest.mark.parametrize(
    "preset, billions",
    [("mirasol_3b", 3.0), ("mirasol_3b_video_only", 2.9)],
)
def test_3b_presets_match_the_paper_without_allocating(preset, billions):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = count_parameters(preset)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # float32 weights would take 12 GB; the process's peak memory grows
    # by far less than one of them (ru_maxrss is KiB on Linux).
    scale = 1 if sys.platform == "darwin" else 1024
    assert (peak_after - peak_before) * scale < 2e9
    print(f"\n{preset}\n{format_counts(counts)}")
    assert abs(counts["total"] / 1e9 - billions) <= 0.05 * billions
    # About half of the parameters are on the audio/video side.
    media = counts["total"] - counts["text_decoder"]
    assert 0.4 < media / counts["total"] < 0.6
    if preset.endswith("video_only"):
        assert counts["audio_encoder"] == 0


def _hub_backbone(**kwargs):
    from tests.models.test_pretrained_parts import from_components
    from tests.models.test_pretrained_parts import tiny_whisper

    return from_components(audio_encoder=tiny_whisper(), **kwargs)


def _standalone_sizes():
    """The keras-hub parts' own sizes, built alone (the same seeds are
    not needed: only shapes count)."""
    from tests.models import test_pretrained_parts as parts

    return {
        "video_encoder": parts.tiny_video_prism().count_params(),
        "audio_encoder": parts.tiny_whisper().count_params(),
        "text_decoder": parts.tiny_gemma3().count_params(),
    }


def test_breakdown_splits_the_keras_hub_parts_from_the_new_weights():
    backbone = _hub_backbone(freeze=("video_encoder", "audio_encoder"))
    rows = {row["component"]: row for row in parameter_breakdown(backbone)}
    alone = _standalone_sizes()
    for name, size in alone.items():
        assert rows[name]["pretrained"] == size, name
        assert rows[name]["origin"].endswith("(keras-hub)")
    # The text decoder's new weights are its gated cross-attention blocks.
    blocks = backbone.text_decoder.cross_attention_blocks
    new = sum(block.count_params() for block in blocks)
    assert new > 0
    assert rows["text_decoder"]["parameters"] == alone["text_decoder"] + new
    # Frozen parts: none of the encoders' weights train.
    assert rows["video_encoder"]["trainable"] == 0
    assert rows["audio_encoder"]["trainable"] == 0
    assert (
        rows["text_decoder"]["trainable"] == rows["text_decoder"]["parameters"]
    )
    # Mirasol's own parts have nothing pretrained.
    assert rows["combiner"]["pretrained"] == 0
    assert rows["combiner"]["origin"] == type(backbone.combiner).__name__
    total = rows["total"]
    assert total["parameters"] == backbone.count_params()
    assert total["pretrained"] == sum(alone.values())
    assert total["parameters"] == sum(
        row["parameters"] for name, row in rows.items() if name != "total"
    )
    assert total["trainable"] == total["parameters"] - (
        alone["video_encoder"] + alone["audio_encoder"]
    )


def test_a_saved_hub_model_counts_shape_only_as_built(tmp_path, capsys):
    """A preset folder of a `from_components` model counts from its
    config alone, frozen parts included, as the built model does;
    `keras-mirasol params` prints it."""
    from keras_mirasol.cli import main

    backbone = _hub_backbone(freeze=("video_encoder",))
    built = parameter_breakdown(backbone)
    backbone.save_to_preset(str(tmp_path))
    assert parameter_breakdown(str(tmp_path)) == built
    assert main(["params", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Gemma3Backbone (keras-hub)" in out
    assert f"{built[-1]['parameters']:,}" in out
    # With LoRA, the adapters are all that trains.
    backbone.enable_lora(2)
    adapters = [w for w in backbone.weights if "lora_kernel" in w.path]
    total = parameter_breakdown(backbone)[-1]
    assert total["trainable"] == sum(np.prod(w.shape) for w in adapters) > 0


def test_unknown_model_names_what_is_accepted():
    with pytest.raises(ValueError, match="folder written by `save_to_preset"):
        count_parameters("no_such_preset")
