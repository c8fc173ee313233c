"""Media preparation and tf.data ops for Mirasol clips."""

from keras_mirasol.data.clip_ops import fit_clip
from keras_mirasol.data.clip_ops import resample_audio
from keras_mirasol.data.clip_ops import resize_frames

__all__ = ["fit_clip", "resample_audio", "resize_frames"]
