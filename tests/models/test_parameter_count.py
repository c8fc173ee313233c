import resource
import sys

import pytest

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import count_parameters
from keras_mirasol.models.parameter_count import format_counts
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
