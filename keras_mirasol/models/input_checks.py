"""Checks of what the model and its preprocessor are given.

One place for every input check: the backbone's (`check_backbone_inputs`,
on tensors of the model's shapes), the preprocessor's
(`check_preprocessor_inputs`, on raw clips and text) and the per-modality
shape checks both encoders' `build` use. Each error names what is wrong,
the expected shape and the config key or preprocessing step that fixes it.
"""

import numpy as np


def validate_video_shape(shape, num_frames, image_size, num_snippets):
    """Raise a `ValueError` naming the config key when `shape` is wrong.

    Args:
        shape: tuple. Static shape of the `video` input.
        num_frames: int. Configured frames per clip (`num_frames`).
        image_size: tuple `(H, W)`. Configured frame size (`image_size`).
        num_snippets: int. Configured snippets per clip (`num_snippets`).
    """
    expected = f"[batch, {num_frames}, {image_size[0]}, {image_size[1]}, 3]"
    if len(shape) != 5:
        raise ValueError(
            f"`video` must have rank 5, float {expected} (batch, frames, "
            f"height, width, RGB), but got shape {tuple(shape)}. Add the "
            "batch axis, or stack single images into clips of `num_frames`."
        )
    if shape[-1] != 3:
        raise ValueError(
            f"`video` must have 3 (RGB) channels last, {expected}, but got "
            f"{shape[-1]} channels in shape {tuple(shape)}. Convert grayscale "
            "or RGBA frames to RGB in preprocessing."
        )
    if shape[1] is not None and shape[1] != num_frames:
        hint = ""
        if shape[1] % num_snippets:
            hint = (
                f" {shape[1]} frames do not split into num_snippets="
                f"{num_snippets} equal snippets either."
            )
        raise ValueError(
            f"`video` has {shape[1]} frames but the model expects {expected} "
            f"(config key `num_frames`={num_frames}).{hint} Sample the clip "
            "to `num_frames` frames in preprocessing, or build the model "
            "with another `num_frames` (a multiple of `num_snippets`)."
        )
    if tuple(shape[2:4]) != tuple(image_size):
        raise ValueError(
            f"`video` frames are {tuple(shape[2:4])} (height, width) but the "
            f"model expects {expected} (config key `image_size`="
            f"{tuple(image_size)}). Resize frames in preprocessing."
        )


def validate_audio_shape(shape, num_samples, sample_rate):
    """Raise a `ValueError` naming the config key when `shape` is wrong.

    Args:
        shape: tuple. Static shape of the `audio` input.
        num_samples: int. Samples the model expects per clip.
        sample_rate: int. Configured `audio_sample_rate`.
    """
    seconds = num_samples / sample_rate
    expected = f"float [batch, {num_samples}]"
    if len(shape) != 2:
        hint = ""
        if len(shape) == 3:
            hint = " For multi-channel audio, average the channels to mono."
        raise ValueError(
            f"`audio` must be a mono waveform, {expected} ({seconds:g} s at "
            f"audio_sample_rate={sample_rate}), but got shape "
            f"{tuple(shape)}.{hint}"
        )
    if shape[1] is not None and shape[1] != num_samples:
        relation = "too short" if shape[1] < num_samples else "too long"
        raise ValueError(
            f"`audio` has {shape[1]} samples ({shape[1] / sample_rate:g} s), "
            f"{relation} for the clip: the model expects {expected}, "
            f"{seconds:g} s at `audio_sample_rate`={sample_rate}, the span "
            "of `num_frames` at `frame_rate`. Pad or crop the waveform to "
            "the clip span in preprocessing, or change `audio_sample_rate`, "
            "`num_frames` or `frame_rate`."
        )


def check_backbone_inputs(
    inputs,
    input_names,
    num_frames,
    image_size,
    num_snippets,
    num_audio_samples,
    audio_sample_rate,
    max_sequence_length,
):
    """Check a `MirasolBackbone` input dict's keys and static shapes.

    Args:
        inputs: dict of tensors.
        input_names: list of str. The keys the backbone takes.
        num_frames, image_size, num_snippets: the backbone's video config.
        num_audio_samples: int, or None for a `use_audio=False` model.
        audio_sample_rate: int.
        max_sequence_length: int.

    Raises:
        ValueError: naming the expected shape and the config key to
            change, before anything is traced or compiled.
    """
    if not isinstance(inputs, dict):
        raise ValueError(
            "MirasolBackbone takes a dict with keys "
            f"{input_names}, got {type(inputs).__name__}."
        )
    missing = [k for k in input_names if k not in inputs]
    unknown = [k for k in inputs if k not in input_names]
    if missing or unknown:
        hint = ""
        if "audio" in unknown:
            hint = (
                " This model was built with use_audio=False; drop "
                "`audio` or use a model with audio."
            )
        raise ValueError(
            f"MirasolBackbone inputs must have keys {input_names}; "
            f"missing {missing}, unexpected {unknown}.{hint}"
        )
    validate_video_shape(
        tuple(inputs["video"].shape),
        num_frames,
        image_size,
        num_snippets,
    )
    if num_audio_samples is not None:
        validate_audio_shape(
            tuple(inputs["audio"].shape),
            num_audio_samples,
            audio_sample_rate,
        )
    token_shape = tuple(inputs["token_ids"].shape)
    if len(token_shape) != 2:
        raise ValueError(
            f"`token_ids` must be int [batch, length], got shape {token_shape}."
        )
    mask_shape = tuple(inputs["padding_mask"].shape)
    if mask_shape != token_shape:
        raise ValueError(
            f"`padding_mask` shape {mask_shape} must equal `token_ids` "
            f"shape {token_shape}."
        )
    length = token_shape[1]
    if length is not None and length > max_sequence_length:
        raise ValueError(
            f"`token_ids` has length {length} > max_sequence_length="
            f"{max_sequence_length}. Truncate the text or build the "
            "model with a larger `max_sequence_length`."
        )
    media = {
        k: tuple(inputs[k].shape)[0]
        for k in input_names
        if k in ("video", "audio") and tuple(inputs[k].shape)[0] is not None
    }
    if len(set(media.values())) > 1:
        raise ValueError(
            f"`video` and `audio` must share the batch size, got {media}."
        )
    clips, rows = media.get("video"), token_shape[0]
    if clips is not None and rows is not None and rows % clips:
        raise ValueError(
            f"`token_ids` has {rows} rows for {clips} clips: the text "
            "batch must equal the clip batch, or be k times it with rows "
            "i*k ... i*k+k-1 asking about clip i (several questions per "
            "clip share one pass of the media encoders)."
        )


def check_preprocessor_inputs(x, use_audio):
    """Check what `MirasolCausalLMPreprocessor` is given, before any op.

    Args:
        x: the preprocessor's input: a dict with `video`, `audio` (when
            `use_audio`), `prompts` and, to train, `responses`; one clip
            or a batch of clips.
        use_audio: bool.

    Raises:
        ValueError: a missing key, a video that is not frames, or batch
            sizes that do not fit (one prompt per clip, or k per clip).
    """
    if not isinstance(x, dict):
        raise ValueError(
            "MirasolCausalLMPreprocessor takes a dict with keys "
            "'video', 'audio', 'prompts' (and 'responses' to train), "
            f"got {type(x).__name__}."
        )
    required = ["video", "prompts"] + (["audio"] if use_audio else [])
    missing = [k for k in required if k not in x]
    if missing:
        raise ValueError(
            f"Missing input keys {missing}: the preprocessor needs "
            f"{required} (got {sorted(x)}). A clip without an audio "
            "track should carry silence, e.g. np.zeros(num_samples)."
        )
    video_shape = tuple(x["video"].shape)
    if len(video_shape) not in (4, 5) or video_shape[-1] != 3:
        raise ValueError(
            "`video` must be frames [frames, height, width, 3] or a "
            f"batch [batch, frames, height, width, 3], got {video_shape}."
        )
    sizes = {"video": video_shape[0] if len(video_shape) == 5 else None}
    for key in ("audio", "prompts", "responses"):
        if key in x and not isinstance(x[key], str):
            shape = tuple(getattr(x[key], "shape", np.shape(x[key])))
            batched = len(shape) == (2 if key == "audio" else 1)
            sizes[key] = shape[0] if batched else None
    known = {k: v for k, v in sizes.items() if v is not None}
    media = {k: known[k] for k in ("video", "audio") if k in known}
    text = {k: known[k] for k in ("prompts", "responses") if k in known}
    clips = set(media.values())
    rows = set(text.values())
    if (
        len(clips) > 1
        or len(rows) > 1
        or (clips and rows and max(rows) % max(clips))
    ):
        raise ValueError(
            f"Mismatched batch sizes {dict(media, **text)}: give one "
            "audio track per clip in `video`, and one prompt (and "
            "response) per clip, or k per clip with prompts "
            "i*k ... i*k+k-1 about clip i."
        )
