"""Every layer and component survives a `.keras` save/load unchanged."""

import keras
import numpy as np
import pytest

from keras_mirasol import layers
from keras_mirasol import models
from tests.conftest import assert_save_load

RNG = np.random.default_rng(0)


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def cases():
    return {
        "tubelet_embedding": (
            layers.TubeletEmbedding(8, (2, 4, 4), name="tubelets"),
            [normal(2, 4, 8, 8, 3)],
        ),
        "framed_mel_spectrogram": (
            layers.FramedMelSpectrogram(
                fft_length=64, sequence_stride=16, num_mel_bins=8, name="mel"
            ),
            [normal(2, 256)],
        ),
        "transformer_stack": (
            layers.TransformerStack(2, 2, 16, name="stack"),
            [normal(2, 5, 8)],
        ),
        "token_learner": (
            layers.TokenLearner(3, bottleneck_dim=8, name="learner"),
            [normal(2, 6, 8)],
        ),
        "video_encoder": (
            models.VideoEncoder(
                num_frames=4,
                num_snippets=2,
                image_size=8,
                tubelet_size=(2, 4, 4),
                hidden_dim=8,
                num_layers=1,
                num_heads=2,
                intermediate_dim=16,
                name="video_encoder",
            ),
            [RNG.uniform(size=(2, 4, 8, 8, 3)).astype("float32")],
        ),
        "audio_encoder": (
            models.AudioEncoder(
                num_samples=4000,
                num_snippets=2,
                sample_rate=8000,
                num_mel_bins=8,
                fft_length=256,
                window_length=200,
                hop_length=100,
                patch_size=(4, 4),
                hidden_dim=8,
                num_layers=1,
                num_heads=2,
                intermediate_dim=16,
                name="audio_encoder",
            ),
            [normal(2, 4000)],
        ),
        "transformer_combiner": (
            models.TransformerCombiner(2, 8, 1, 2, 16, name="combiner"),
            [normal(2, 3, 4, 6), normal(2, 3, 5, 4)],
        ),
        "ttm_combiner": (
            models.TTMCombiner(
                num_tokens=2,
                memory_size=3,
                hidden_dim=8,
                num_layers=1,
                num_heads=2,
                intermediate_dim=16,
                name="combiner",
            ),
            [normal(2, 3, 4, 6), normal(2, 3, 5, 4)],
        ),
        "time_aligned_decoder": (
            models.TimeAlignedDecoder(8, 2, 2, 16, name="av_decoder"),
            [normal(2, 3, 2, 8)],
        ),
        "next_snippet_latent_loss": (
            models.NextSnippetLatentLoss(8, "cosine", name="latent"),
            [normal(2, 6, 8), normal(2, 3, 2, 8)],
        ),
        "text_decoder": (
            models.TextDecoder(
                vocabulary_size=20,
                max_sequence_length=8,
                hidden_dim=8,
                num_layers=2,
                num_heads=2,
                intermediate_dim=16,
                cross_attention_every=2,
                tie_word_embeddings=False,
                name="text_decoder",
            ),
            [RNG.integers(0, 20, size=(2, 6)).astype("int32"), normal(2, 4, 8)],
        ),
    }


@pytest.mark.parametrize("name", sorted(cases()))
def test_layer_save_load(tmp_path, name):
    layer, arrays = cases()[name]
    inputs = [
        keras.Input(shape=a.shape[1:], dtype=str(a.dtype)) for a in arrays
    ]
    model = keras.Model(inputs, layer(*inputs))
    restored = assert_save_load(tmp_path, model, arrays)
    restored_layer = restored.layers[-1]
    assert type(restored_layer) is type(layer)
    assert restored_layer.get_config() == layer.get_config()
