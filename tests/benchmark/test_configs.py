"""The peer-matched config and the port's twin describe the same model."""

import numpy as np
import pytest
from keras import ops

from keras_mirasol.benchmark import configs
from keras_mirasol.models.audio_encoder import AudioEncoder
from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.parameter_count import count_parameters


@pytest.mark.parametrize("frames, spec", [(16, 1024), (64, 4096)])
def test_spectrogram_frames_is_what_the_audio_encoder_computes(frames, spec):
    config = configs.peer_matched_config(frames, spec)
    samples = frames * config["audio_sample_rate"] // config["frame_rate"]
    encoder = AudioEncoder(
        num_samples=samples,
        num_snippets=config["num_snippets"],
        sample_rate=config["audio_sample_rate"],
        num_mel_bins=config["audio_num_mel_bins"],
        fft_length=config["audio_fft_length"],
        window_length=config["audio_window_length"],
        hop_length=config["audio_hop_length"],
        patch_size=config["audio_patch_size"],
        hidden_dim=8,
        num_layers=1,
        num_heads=1,
        intermediate_dim=8,
    )
    mel = encoder.log_mel(ops.zeros((1, samples)))
    # [B * T, frames, mels] (padded to whole patches): count real frames.
    assert encoder.frames_per_snippet * config["num_snippets"] == (
        configs.spectrogram_frames(config)
    )
    assert ops.shape(mel)[0] == config["num_snippets"]
    # Within 2% of the port's length, from above.
    assert spec <= configs.spectrogram_frames(config) <= 1.02 * spec


def test_peer_matched_widths_and_depths():
    config = configs.peer_matched_config(16, 1024)
    backbone = MirasolBackbone.from_config(config)
    for part in ("video", "audio", "av", "text"):
        assert config[f"{part}_hidden_dim"] == 264
        assert config[f"{part}_num_layers"] == 4
    assert backbone.combiner.num_tokens == 3
    assert config["num_snippets"] * 4 == config["num_frames"]
    counted = count_parameters(config)["total"]
    assert counted == backbone.count_params()


def test_peer_matched_rejects_frames_off_the_port_grid():
    with pytest.raises(ValueError, match="multiple of 4"):
        configs.peer_matched_config(18, 1024)
    with pytest.raises(ValueError, match="square"):
        configs.port_chunk_frames(1000)
    with pytest.raises(ValueError, match="peer-matched"):
        configs.benchmark_config("mirasol_huge")


def test_port_sees_the_same_clip_as_ours():
    pytest.importorskip("mirasol_pytorch")
    import torch

    from keras_mirasol.benchmark import port

    for frames, spec in [(16, 1024), (64, 4096)]:
        model, make_inputs = port.build_port(frames, spec, threads=1)
        inputs = make_inputs(1)
        ours = configs.peer_matched_config(frames, spec)
        assert inputs["video"].shape[2] == ours["num_frames"]
        assert inputs["video"].shape[-1] == ours["image_size"]
        assert inputs["audio"].shape[1] == ours["audio_num_mel_bins"]
        assert inputs["text"].shape[1] == ours["max_sequence_length"]
        # Without its reconstruction heads, which our model does not
        # have, the port's parameter count is within 2% of ours.
        total, without_heads = port.port_parameters(model)
        our_params = count_parameters(ours)["total"]
        assert abs(without_heads / our_params - 1) < 0.02, (
            without_heads,
            our_params,
        )
        assert total > without_heads
    with torch.no_grad():
        loss = model(**inputs)
    assert np.isfinite(float(loss))


def test_scaling_points_keep_the_snippet_and_vary_the_model():
    from keras_mirasol.benchmark.configs import scaling_config

    short = scaling_config("peer-matched", 128, "transformer")
    long = scaling_config("peer-matched", 512, "ttm+remat")
    # More frames are more snippets of the same 4 frames and 256 log-mel
    # frames.
    assert short["num_frames"] // short["num_snippets"] == 4
    assert long["num_frames"] // long["num_snippets"] == 4
    assert configs.spectrogram_frames(long) == 4 * configs.spectrogram_frames(
        short
    )
    assert (short["combiner_type"], short["remat"]) == ("transformer", False)
    assert (long["combiner_type"], long["remat"]) == ("ttm", True)
    baseline = scaling_config("peer-matched", 128, "unchunked")
    assert baseline["num_snippets"] == 1
    assert baseline["combiner_type"] == "all_tokens"
    tiny = scaling_config("mirasol_tiny", 32, "transformer")
    assert (tiny["num_frames"], tiny["num_snippets"]) == (32, 8)


@pytest.mark.parametrize(
    "name, frames, variant, words",
    [
        ("peer-matched", 128, "lstm", "Unknown scaling variant 'lstm'"),
        ("mirasol_tiny", 10, "transformer", "multiple of mirasol_tiny's 4"),
    ],
)
def test_scaling_point_errors_name_the_fix(name, frames, variant, words):
    from keras_mirasol.benchmark.configs import scaling_config

    with pytest.raises(ValueError, match=words):
        scaling_config(name, frames, variant)
