"""TensorFlow ops that fit a decoded clip to a model's static shapes.

`fit_clip` is the one place that cuts the same time window from video and
audio. The tf.data pipeline (`keras_mirasol.data.snippets.sample_window`)
and the preprocessor (`MirasolCausalLMPreprocessor.prepare_media`, used by
`fit`, `evaluate` and `generate`) both call it, so it lives here, below
`keras_mirasol.models` and `keras_mirasol.data`. A clip the pipeline has
fitted already passes through the preprocessor as it is.

They run eagerly and inside `tf.data` alike, on one clip (`video`
`[F, H, W, 3]`, `audio` `[S]`) or a batch of clips of equal size
(`[B, F, H, W, 3]`, `[B, S]`).

The sampling rule: video and audio of a clip are taken to cover the same
time span. A window of the model's span (`num_samples` audio samples, the
time of `num_frames` frames at the model's `frame_rate`) is cut from the
clip, centred (`offset=0.5`, for evaluation) or anywhere (`offset` drawn in
`[0, 1]`, for training); `num_frames` frames are sampled at the centres of
equal time steps of that window. A clip shorter than the span is padded
after its end: silence for audio, the last frame repeated for video.
"""

import tensorflow as tf


def fit_clip(video, audio, num_frames, num_samples, offset=0.5):
    """Cut the same time window from video and audio.

    Args:
        video: `[..., F, H, W, C]` frames covering the clip.
        audio: `[..., S]` waveform covering the same time, at the model's
            sample rate, or `None` (video only: frames are sampled across
            the whole clip).
        num_frames: int. Frames to return.
        num_samples: int. Samples to return (the model's span).
        offset: float or scalar tensor in `[0, 1]`: where the window sits
            in a clip longer than the span (0 = start, 0.5 = centre;
            unused without audio). Defaults to `0.5`.

    Returns:
        `(video [..., num_frames, H, W, C], audio [..., num_samples])`.
        A clip that already has the window's static shape (`num_frames`
        frames, `num_samples` samples: it was fitted before, e.g. by the
        tf.data pipeline) comes back as it is, which is what the sampling
        rule gives for it: fitting twice is fitting once.
    """
    video = tf.convert_to_tensor(video)
    if audio is not None:
        audio = tf.cast(tf.convert_to_tensor(audio), tf.float32)
        if (
            video.shape.rank is not None
            and video.shape[-4] == num_frames
            and audio.shape[-1] == num_samples
        ):
            return video, audio
    frames = tf.shape(video)[-4]
    if audio is None:
        step = tf.cast(frames, tf.float32) / num_frames
        times = (tf.range(num_frames, dtype=tf.float32) + 0.5) * step
        index = tf.minimum(tf.cast(times, tf.int32), frames - 1)
        return tf.gather(video, index, axis=-4), None
    samples = tf.shape(audio)[-1]
    slack = tf.maximum(samples - num_samples, 0)
    start = tf.cast(
        tf.round(tf.cast(slack, tf.float32) * tf.cast(offset, tf.float32)),
        tf.int32,
    )
    # Frame i shows the centre of the i-th of num_frames equal steps.
    step = num_samples / num_frames
    times = (
        tf.cast(start, tf.float32)
        + (tf.range(num_frames, dtype=tf.float32) + 0.5) * step
    )
    index = tf.cast(
        times / tf.cast(samples, tf.float32) * tf.cast(frames, tf.float32),
        tf.int32,
    )
    index = tf.clip_by_value(index, 0, frames - 1)
    video = tf.gather(video, index, axis=-4)
    rank = len(audio.shape)
    pad = tf.maximum(num_samples - samples, 0)
    audio = tf.pad(audio, [[0, 0]] * (rank - 1) + [[0, pad]])
    audio = audio[..., start : start + num_samples]
    audio = tf.ensure_shape(audio, audio.shape[:-1] + [num_samples])
    return video, audio


def resize_frames(video, image_size):
    """Resize frames and scale them to float32 in `[0, 1]`.

    Args:
        video: `[..., F, H, W, 3]`, uint8 in `[0, 255]` or float in `[0, 1]`.
        image_size: `(height, width)`.

    Returns:
        float32 `[..., F, height, width, 3]`.
    """
    video = tf.convert_to_tensor(video)
    if video.dtype == tf.uint8:
        video = tf.cast(video, tf.float32) / 255.0
    video = tf.cast(video, tf.float32)
    if tuple(video.shape[-3:-1]) == tuple(image_size):
        return video
    shape = tf.shape(video)
    flat = tf.reshape(video, tf.concat([[-1], shape[-3:]], axis=0))
    flat = tf.image.resize(flat, image_size, antialias=True)
    out_shape = tf.concat([shape[:-3], image_size, shape[-1:]], axis=0)
    return tf.clip_by_value(tf.reshape(flat, out_shape), 0.0, 1.0)


def resample_audio(audio, source_rate, target_rate):
    """Linear-interpolation resampling of `[..., S]` audio.

    Args:
        audio: float `[..., S]`.
        source_rate: int or scalar tensor. Rate of `audio` in Hz.
        target_rate: int. Wanted rate in Hz.

    Returns:
        float32 `[..., round(S * target_rate / source_rate)]`.
    """
    audio = tf.convert_to_tensor(audio, tf.float32)
    source_rate = tf.cast(source_rate, tf.float32)
    samples = tf.shape(audio)[-1]
    new_samples = tf.cast(
        tf.round(tf.cast(samples, tf.float32) * target_rate / source_rate),
        tf.int32,
    )
    position = tf.range(new_samples, dtype=tf.float32) * (
        source_rate / target_rate
    )
    left = tf.clip_by_value(
        tf.cast(tf.floor(position), tf.int32), 0, samples - 1
    )
    right = tf.minimum(left + 1, samples - 1)
    weight = position - tf.cast(left, tf.float32)
    return (
        tf.gather(audio, left, axis=-1) * (1.0 - weight)
        + tf.gather(audio, right, axis=-1) * weight
    )
