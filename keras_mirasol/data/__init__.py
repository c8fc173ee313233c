"""Media files, records and tf.data ops for Mirasol clips.

Names load on first use: `keras_mirasol.data.media` and `.synthetic` need
only PyAV and numpy (worker processes import them without TensorFlow).
"""

import importlib

_EXPORTS = {
    "MediaError": "media",
    "read_clip": "media",
    "read_clips": "media",
    "write_clip": "media",
    "fit_clip": "keras_mirasol.layers.clip_ops",
    "resample_audio": "keras_mirasol.layers.clip_ops",
    "resize_frames": "keras_mirasol.layers.clip_ops",
    "DamagedRecords": "record_io",
    "check_records": "record_io",
    "SettingsChanged": "records",
    "convert": "records",
    "load_annotations": "records",
    "count_questions": "snippets",
    "record_dataset": "snippets",
    "record_texts": "snippets",
    "snippet_dataset": "snippets",
    "write_dataset": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        if "." not in module:
            module = f"keras_mirasol.data.{module}"
        module = importlib.import_module(module)
        return getattr(module, name)
    raise AttributeError(
        f"module 'keras_mirasol.data' has no attribute {name!r}"
    )
