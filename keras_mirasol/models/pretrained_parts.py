"""Which pretrained keras-hub parts a MirasolBackbone takes, and checks."""

import keras
import keras_hub

from keras_mirasol.models.pretrained_audio_encoder import WHISPER_SAMPLE_RATE
from keras_mirasol.models.pretrained_audio_encoder import PretrainedAudioEncoder
from keras_mirasol.models.pretrained_text_decoder import PretrainedTextDecoder
from keras_mirasol.models.pretrained_video_encoder import PretrainedVideoEncoder

# The names `from_components(freeze=...)` takes.
FREEZABLE_PARTS = ("video_encoder", "audio_encoder", "text_decoder")
PRETRAINED_PARTS = (
    PretrainedVideoEncoder,
    PretrainedAudioEncoder,
    PretrainedTextDecoder,
)


def is_pretrained_part(part):
    """Whether `part` wraps a keras-hub backbone.

    Args:
        part: a layer or None.

    Returns:
        bool.
    """
    return isinstance(part, PRETRAINED_PARTS)


def pretrained_video_encoder(part, num_snippets, spatial_pool=1):
    """`part` as a `PretrainedVideoEncoder` named `video_encoder`, or None.

    Args:
        part: None, a `PretrainedVideoEncoder`, a keras-hub
            `VideoPrismBackbone`, or a serialized `PretrainedVideoEncoder`
            (a config's dict).
        num_snippets: int. Snippets per clip.
        spatial_pool: int. Used when `part` is a keras-hub backbone.
            Defaults to `1`.

    Returns:
        `PretrainedVideoEncoder` or None.
    """
    if part is None or isinstance(part, PretrainedVideoEncoder):
        return part
    if isinstance(part, dict):
        return keras.layers.deserialize(part)
    return PretrainedVideoEncoder(
        part,
        num_snippets=num_snippets,
        spatial_pool=spatial_pool,
        name="video_encoder",
    )


def pretrained_audio_encoder(part, num_samples, num_snippets):
    """`part` as a `PretrainedAudioEncoder` named `audio_encoder`, or None.

    Args:
        part: None, a `PretrainedAudioEncoder`, a keras-hub
            `WhisperBackbone`, or a serialized `PretrainedAudioEncoder`.
        num_samples: int. Waveform samples per clip.
        num_snippets: int. Snippets per clip.

    Returns:
        `PretrainedAudioEncoder` or None.
    """
    if part is None or isinstance(part, PretrainedAudioEncoder):
        return part
    if isinstance(part, dict):
        return keras.layers.deserialize(part)
    return PretrainedAudioEncoder(
        part,
        num_samples=num_samples,
        num_snippets=num_snippets,
        name="audio_encoder",
    )


def pretrained_text_decoder(
    part, cross_attention_every, dropout, layer_norm_epsilon
):
    """`part` as a `PretrainedTextDecoder` named `text_decoder`, or None.

    Args:
        part: None, a `PretrainedTextDecoder`, a supported keras-hub text
            backbone, or a serialized `PretrainedTextDecoder`.
        cross_attention_every: int. Used when `part` is a keras-hub
            backbone.
        dropout: float. Dropout of the inserted blocks.
        layer_norm_epsilon: float. Epsilon of the inserted blocks.

    Returns:
        `PretrainedTextDecoder` or None.
    """
    if part is None or isinstance(part, PretrainedTextDecoder):
        return part
    if isinstance(part, dict):
        return keras.layers.deserialize(part)
    if not isinstance(part, keras_hub.models.Backbone):
        raise ValueError(
            "`text_decoder` must be a keras-hub text backbone (e.g. "
            "keras_hub.models.Gemma3Backbone) or a PretrainedTextDecoder, "
            f"got {type(part).__name__}."
        )
    return PretrainedTextDecoder(
        part,
        cross_attention_every=cross_attention_every,
        dropout=dropout,
        layer_norm_epsilon=layer_norm_epsilon,
        name="text_decoder",
    )


def check_pretrained_parts(
    video_encoder,
    audio_encoder,
    text_decoder,
    num_frames,
    image_size,
    use_audio,
    audio_sample_rate,
    vocabulary_size,
):
    """Check that a backbone's config fits its pretrained parts.

    Args:
        video_encoder: `PretrainedVideoEncoder` or None.
        audio_encoder: `PretrainedAudioEncoder` or None.
        text_decoder: `PretrainedTextDecoder` or None.
        num_frames: int. The backbone's frames per clip.
        image_size: `(H, W)`. The backbone's frame size.
        use_audio: bool. Whether the backbone takes audio.
        audio_sample_rate: int. The backbone's audio rate.
        vocabulary_size: int. The backbone's vocabulary size.

    Raises:
        ValueError: naming the config value and what the part needs.
    """
    problems = []
    if video_encoder is not None:
        if num_frames != video_encoder.num_frames:
            problems.append(
                f"num_frames={num_frames}, but the video encoder takes "
                f"{video_encoder.num_snippets} snippets of "
                f"{video_encoder.frames_per_snippet} frames = "
                f"{video_encoder.num_frames}"
            )
        if tuple(image_size) != tuple(video_encoder.image_size):
            problems.append(
                f"image_size={tuple(image_size)}, but the video encoder "
                f"takes {tuple(video_encoder.image_size)}"
            )
    if audio_encoder is not None:
        if not use_audio:
            problems.append(
                "use_audio=False, but an audio encoder is given (drop it, "
                "or set use_audio=True)"
            )
        if audio_sample_rate != WHISPER_SAMPLE_RATE:
            problems.append(
                f"audio_sample_rate={audio_sample_rate}, but Whisper takes "
                f"{WHISPER_SAMPLE_RATE} Hz"
            )
    if text_decoder is not None:
        if vocabulary_size != text_decoder.vocabulary_size:
            problems.append(
                f"vocabulary_size={vocabulary_size}, but the text decoder "
                f"has {text_decoder.vocabulary_size} tokens"
            )
    if problems:
        raise ValueError(
            "The config does not fit the pretrained parts: "
            + "; ".join(problems)
            + ". MirasolBackbone.from_components() sets these from the "
            "parts."
        )


def freeze_parts(backbone, parts):
    """Freeze the pretrained weights of the named parts.

    A frozen video encoder keeps all its weights; a frozen text decoder
    keeps the language model's weights while its inserted cross-attention
    blocks still train.

    Args:
        backbone: `MirasolBackbone`.
        parts: iterable of names in `FREEZABLE_PARTS`.
    """
    for name in parts:
        if name not in FREEZABLE_PARTS:
            raise ValueError(
                f"Cannot freeze {name!r}: `freeze` takes names among "
                f"{FREEZABLE_PARTS}."
            )
        part = getattr(backbone, name)
        if not is_pretrained_part(part):
            raise ValueError(
                f"Cannot freeze {name!r}: it is Mirasol's own "
                f"{type(part).__name__}, trained from scratch. Freeze "
                "only the pretrained parts you pass, or set "
                f"`backbone.{name}.trainable = False` yourself."
            )
        part.backbone.trainable = False
