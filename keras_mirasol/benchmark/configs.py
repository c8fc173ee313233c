"""What the benchmark measures: our configurations and the port's twin.

`peer_matched_config(frames, spectrogram_frames)` is the configuration of
the public PyTorch port (`mirasol-pytorch`) that an outside measurement
used: 64x64 frames in snippets of 4 frames, tubelets 2x16x16, 64 mel
bins, width 264 with 4 heads, depth 4 in every part, a 4-layer Combiner
keeping 3 tokens, 32 text tokens and a vocabulary of 256.
`port_config(...)` gives the port's constructor arguments for the same
model and `port_inputs_shape(...)` its input shapes, so both sides see the
same frames, the same spectrogram length and the same widths.
"""

import math

from keras_mirasol.models.backbone import unchunked_config
from keras_mirasol.models.presets import backbone_presets

PEER_WIDTH = 264
PEER_HEADS = 4
PEER_DEPTH = 4
PEER_COMBINER_LAYERS = 4
PEER_COMBINER_TOKENS = 3
PEER_TEXT_LENGTH = 32
PEER_VOCABULARY = 256
PEER_IMAGE_SIZE = 64
PEER_FRAMES_PER_SNIPPET = 4
PEER_MEL_BINS = 64
PEER_FRAME_RATE = 8
PEER_SAMPLE_RATE = 16000

# The port's auxiliary heads that our model does not have: next-chunk
# reconstruction of the pixels and the spectrogram from the latents, and
# its next-token predictor (ours is `latent_prediction`, counted).
PORT_HEAD_MODULES = ("to_reconstructed_video", "to_reconstructed_audio")

CONFIG_NAMES = ("mirasol_tiny", "mirasol_small", "peer-matched")

# The scaling section: clip lengths in frames (snippets of a fixed number
# of frames, so more frames are more snippets) and the models compared.
SCALING_FRAMES = (64, 128, 256, 512)
SCALING_VARIANTS = (
    "transformer",
    "ttm",
    "transformer+remat",
    "ttm+remat",
    "unchunked",
)
# Log-mel frames per video frame of the peer-matched points (1024 at 16).
PEER_SPECTROGRAM_PER_FRAME = 64


def spectrogram_frames(config):
    """Log-mel frames per clip that the audio encoder computes.

    Args:
        config: dict. A `MirasolBackbone` config.

    Returns:
        int. `num_snippets * (1 + samples_per_snippet // hop)`.
    """
    seconds = config["num_frames"] / config["frame_rate"]
    samples = round(seconds * config["audio_sample_rate"])
    per_snippet = samples // config["num_snippets"]
    return config["num_snippets"] * (
        1 + per_snippet // config["audio_hop_length"]
    )


def peer_matched_config(frames=16, spectrogram_frames_per_clip=1024):
    """Our backbone config matched to the port's benchmark configuration.

    Args:
        frames: int. Video frames per clip (a multiple of 4).
        spectrogram_frames_per_clip: int. Target log-mel frames per clip;
            the STFT hop is chosen to come closest from above.

    Returns:
        dict. A full `MirasolBackbone` config.
    """
    if frames % PEER_FRAMES_PER_SNIPPET:
        raise ValueError(
            f"`frames` must be a multiple of {PEER_FRAMES_PER_SNIPPET} (the "
            f"port's frames per time chunk), got {frames}."
        )
    num_snippets = frames // PEER_FRAMES_PER_SNIPPET
    samples = frames * PEER_SAMPLE_RATE // PEER_FRAME_RATE
    per_snippet = samples // num_snippets
    frames_per_snippet = spectrogram_frames_per_clip / num_snippets
    hop = max(1, math.floor(per_snippet / max(frames_per_snippet - 1, 1)))
    config = dict(backbone_presets["mirasol_small"]["config"])
    config.update(
        vocabulary_size=PEER_VOCABULARY,
        max_sequence_length=PEER_TEXT_LENGTH,
        num_frames=frames,
        image_size=PEER_IMAGE_SIZE,
        num_snippets=num_snippets,
        frame_rate=PEER_FRAME_RATE,
        tubelet_size=(2, 16, 16),
        audio_sample_rate=PEER_SAMPLE_RATE,
        audio_num_mel_bins=PEER_MEL_BINS,
        audio_fft_length=512,
        audio_window_length=400,
        audio_hop_length=hop,
        audio_patch_size=(16, 16),
        combiner_type="transformer",
        combiner_tokens=PEER_COMBINER_TOKENS,
        combiner_num_layers=PEER_COMBINER_LAYERS,
        latent_loss_type="cosine",
    )
    for part in ("video", "audio", "av", "text"):
        config[f"{part}_hidden_dim"] = PEER_WIDTH
        config[f"{part}_num_layers"] = PEER_DEPTH
        config[f"{part}_num_heads"] = PEER_HEADS
        config[f"{part}_intermediate_dim"] = 4 * PEER_WIDTH
    return config


def port_chunk_frames(spectrogram_frames_per_clip):
    """The port's `audio_time_dim_per_timechunk` for a spectrogram length.

    The port reshapes audio `[b, f, t * c] -> [b, c, f, t]` with
    `c = audio_time_dim_per_timechunk` and requires every chunk to have
    `c` frames, so `t == c`: the length must be a square.
    """
    chunk = math.isqrt(spectrogram_frames_per_clip)
    if chunk * chunk != spectrogram_frames_per_clip or chunk % 16:
        raise ValueError(
            "The port needs a spectrogram length that is the square of a "
            f"multiple of 16 (1024, 4096, ...), got "
            f"{spectrogram_frames_per_clip}."
        )
    return chunk


def port_config(frames=16, spectrogram_frames_per_clip=1024):
    """`mirasol_pytorch.Mirasol(**kwargs)` for the peer-matched model.

    Returns:
        dict of keyword arguments. The video reconstruction target is the
        tubelet (`video_recon_patch_size` = the patch size), the smallest
        the port allows at full resolution. Its reconstruction heads
        (`PORT_HEAD_MODULES`, about 3M parameters, a few MFLOP per step)
        have no counterpart in our model; without them the two models'
        parameter counts are within 1%.
    """
    del frames  # the port's shapes follow from its inputs
    head_dim = PEER_WIDTH // PEER_HEADS
    encoder = dict(depth=PEER_DEPTH, heads=PEER_HEADS, attn_dim_head=head_dim)
    return dict(
        dim=PEER_WIDTH,
        num_text_tokens=PEER_VOCABULARY,
        video_image_size=PEER_IMAGE_SIZE,
        video_frames_per_timechunk=PEER_FRAMES_PER_SNIPPET,
        audio_freq_dim=PEER_MEL_BINS,
        audio_time_dim_per_timechunk=port_chunk_frames(
            spectrogram_frames_per_clip
        ),
        audio_patch_size=(16, 16),
        video_patch_size=(16, 2),
        video_recon_patch_size=(16, 2),
        audio_encoder=encoder,
        video_encoder=encoder,
        num_audio_video_register_tokens=0,
        text_max_seq_len=PEER_TEXT_LENGTH + 1,
        encoder_depth=PEER_DEPTH,
        decoder_depth=PEER_DEPTH,
        combiner_depth=PEER_COMBINER_LAYERS,
        combiner_output_num_tokens=PEER_COMBINER_TOKENS,
        attn_dim_head=head_dim,
        attn_heads=PEER_HEADS,
        # x-transformers reads the head size as `attn_dim_head`; the port
        # passes it as `dim_head`, which its layers ignore (64).
        attn_layers_kwargs=dict(attn_dim_head=head_dim),
        flash_attn=True,
    )


def port_inputs_shape(frames=16, spectrogram_frames_per_clip=1024):
    """Shapes of the port's `video`, `audio` and `text` for one clip.

    Returns:
        dict of tuples without the batch dimension.
    """
    return {
        "video": (3, frames, PEER_IMAGE_SIZE, PEER_IMAGE_SIZE),
        "audio": (PEER_MEL_BINS, spectrogram_frames_per_clip),
        "text": (PEER_TEXT_LENGTH,),
    }


def benchmark_config(name, frames=16, spectrogram_frames_per_clip=1024):
    """A full backbone config by benchmark name.

    Args:
        name: str. A preset name or `"peer-matched"`.
        frames, spectrogram_frames_per_clip: int. Used by `"peer-matched"`.

    Returns:
        dict.
    """
    if name == "peer-matched":
        return peer_matched_config(frames, spectrogram_frames_per_clip)
    if name not in backbone_presets:
        raise ValueError(
            f"Unknown benchmark config {name!r}. Use one of "
            f"{sorted(backbone_presets)} or 'peer-matched'."
        )
    return dict(backbone_presets[name]["config"])


def scaling_config(name, frames, variant):
    """A backbone config for one point of the scaling section.

    Args:
        name: str. `"peer-matched"` (its snippets of 4 frames, 64 log-mel
            frames per video frame) or a preset name (its frames per
            snippet kept, so `frames` sets the number of snippets).
        frames: int. Video frames per clip.
        variant: str. One of `SCALING_VARIANTS`: a Combiner type,
            `"+remat"` for rematerialisation, or `"unchunked"` for the
            baseline without snippets (`unchunked_config`, Transformer
            Combiner layers keeping every token).

    Returns:
        dict. A full `MirasolBackbone` config.
    """
    if variant not in SCALING_VARIANTS:
        raise ValueError(
            f"Unknown scaling variant {variant!r}. Use one of "
            f"{SCALING_VARIANTS}."
        )
    if name == "peer-matched":
        config = peer_matched_config(
            frames, frames * PEER_SPECTROGRAM_PER_FRAME
        )
    else:
        config = benchmark_config(name)
        per_snippet = config["num_frames"] // config["num_snippets"]
        if frames % per_snippet:
            raise ValueError(
                f"`frames` must be a multiple of {name}'s {per_snippet} "
                f"frames per snippet, got {frames}."
            )
        config.update(num_frames=frames, num_snippets=frames // per_snippet)
    if variant == "unchunked":
        return unchunked_config(config)
    combiner, _, remat = variant.partition("+")
    config.update(combiner_type=combiner, remat=remat == "remat")
    return config
