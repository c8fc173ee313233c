"""Built-in MirasolBackbone configurations.

No pretrained Mirasol weights exist anywhere: every preset here is a
configuration, and `MirasolBackbone.from_preset(name)` builds a randomly
initialised model from it.
"""


def _config(**overrides):
    """The shared defaults with `overrides` applied."""
    config = dict(
        vocabulary_size=1024,
        max_sequence_length=32,
        num_frames=16,
        image_size=32,
        num_snippets=4,
        frame_rate=8,
        tubelet_size=(2, 8, 8),
        video_hidden_dim=128,
        video_num_layers=2,
        video_num_heads=4,
        video_intermediate_dim=512,
        use_audio=True,
        audio_sample_rate=16000,
        audio_num_mel_bins=32,
        audio_fft_length=512,
        audio_window_length=400,
        audio_hop_length=160,
        audio_patch_size=(8, 8),
        audio_hidden_dim=128,
        audio_num_layers=2,
        audio_num_heads=4,
        audio_intermediate_dim=512,
        combiner_type="transformer",
        combiner_tokens=4,
        combiner_num_layers=1,
        ttm_memory_size=8,
        av_hidden_dim=128,
        av_num_layers=2,
        av_num_heads=4,
        av_intermediate_dim=512,
        text_hidden_dim=128,
        text_num_layers=2,
        text_num_heads=4,
        text_intermediate_dim=512,
        cross_attention_every=1,
        tie_word_embeddings=True,
        latent_loss_weight=0.1,
        latent_loss_type="mse",
        dropout=0.0,
        layer_norm_epsilon=1e-6,
    )
    config.update(overrides)
    return config


# The demo size: width 64, one encoder layer per modality; tubelets span a
# whole 4-frame snippet in time and the audio hop is 20 ms. One training
# step of batch 64 takes about 0.4 s on a 2-core CPU (JAX).
_TINY = dict(
    tubelet_size=(4, 8, 8),
    video_hidden_dim=64,
    video_num_layers=1,
    video_intermediate_dim=256,
    audio_hop_length=320,
    audio_hidden_dim=64,
    audio_num_layers=1,
    audio_intermediate_dim=256,
    av_hidden_dim=64,
    av_intermediate_dim=256,
    text_hidden_dim=64,
    text_intermediate_dim=256,
)

_SMALL = dict(
    vocabulary_size=8000,
    max_sequence_length=64,
    num_frames=32,
    image_size=64,
    num_snippets=8,
    frame_rate=8,
    tubelet_size=(2, 16, 16),
    video_hidden_dim=256,
    video_num_layers=4,
    video_intermediate_dim=1024,
    audio_num_mel_bins=64,
    audio_patch_size=(16, 16),
    audio_hidden_dim=256,
    audio_num_layers=4,
    audio_intermediate_dim=1024,
    combiner_tokens=8,
    combiner_num_layers=2,
    ttm_memory_size=16,
    av_hidden_dim=256,
    av_num_layers=4,
    av_intermediate_dim=1024,
    text_hidden_dim=256,
    text_num_layers=4,
    text_intermediate_dim=1024,
)

_BASE = dict(
    vocabulary_size=32000,
    max_sequence_length=128,
    num_frames=64,
    image_size=224,
    num_snippets=8,
    frame_rate=4,
    tubelet_size=(4, 16, 16),
    video_hidden_dim=768,
    video_num_layers=12,
    video_num_heads=12,
    video_intermediate_dim=3072,
    audio_num_mel_bins=128,
    audio_patch_size=(16, 16),
    audio_hidden_dim=768,
    audio_num_layers=12,
    audio_num_heads=12,
    audio_intermediate_dim=3072,
    combiner_tokens=32,
    combiner_num_layers=2,
    ttm_memory_size=64,
    av_hidden_dim=768,
    av_num_layers=12,
    av_num_heads=12,
    av_intermediate_dim=3072,
    text_hidden_dim=768,
    text_num_layers=12,
    text_num_heads=12,
    text_intermediate_dim=3072,
)

# The paper's 3B model: about half of the parameters on the audio/video
# side (a ViT-H video encoder over tubelets, an AST-B audio encoder, the
# Combiner and the time-aligned model), half in the text decoder. 128
# frames in 16 snippets of 8 frames; the video-only twin drops the audio
# encoder.
_MIRASOL_3B = dict(
    vocabulary_size=32000,
    max_sequence_length=256,
    num_frames=128,
    image_size=224,
    num_snippets=16,
    frame_rate=4,
    tubelet_size=(4, 16, 16),
    video_hidden_dim=1280,
    video_num_layers=32,
    video_num_heads=16,
    video_intermediate_dim=5120,
    audio_num_mel_bins=128,
    audio_patch_size=(16, 16),
    audio_hidden_dim=768,
    audio_num_layers=12,
    audio_num_heads=12,
    audio_intermediate_dim=3072,
    combiner_tokens=32,
    combiner_num_layers=4,
    ttm_memory_size=128,
    av_hidden_dim=1536,
    av_num_layers=24,
    av_num_heads=16,
    av_intermediate_dim=6144,
    text_hidden_dim=2048,
    text_num_layers=22,
    text_num_heads=16,
    text_intermediate_dim=8192,
)

backbone_presets = {
    "mirasol_tiny": {
        "description": (
            "Demo and CI size (about 0.5M parameters): 16 frames of 32x32 "
            "in 4 snippets, 2 s of 16 kHz audio, width 64."
        ),
        "config": _config(**_TINY),
    },
    "mirasol_small": {
        "description": "About 18M parameters: 32 frames of 64x64, width 256.",
        "config": _config(**_SMALL),
    },
    "mirasol_base": {
        "description": "ViT-B sized parts: 64 frames of 224x224, width 768.",
        "config": _config(**_BASE),
    },
    "mirasol_3b": {
        "description": (
            "The paper's 3B model: 128 frames of 224x224 in 16 snippets, "
            "16 kHz audio, a 2048-wide text decoder."
        ),
        "config": _config(**_MIRASOL_3B),
    },
    "mirasol_3b_video_only": {
        "description": "The 3B model without audio (about 2.9B).",
        "config": _config(**_MIRASOL_3B, use_audio=False),
    },
}
