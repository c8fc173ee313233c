"""Media preparation and tf.data ops for Mirasol clips."""

from keras_mirasol.data.clip_ops import fit_clip
from keras_mirasol.data.clip_ops import resample_audio
from keras_mirasol.data.clip_ops import resize_frames
from keras_mirasol.data.media import MediaError
from keras_mirasol.data.media import read_clip
from keras_mirasol.data.media import write_clip

__all__ = [
    "MediaError",
    "fit_clip",
    "read_clip",
    "resample_audio",
    "resize_frames",
    "write_clip",
]
