"""SavedModel export of a `MirasolCausalLM` with TF Serving signatures.

The exported SavedModel is standalone: TF Serving, `tf.saved_model.load`
and `saved_model_cli` run it without Keras or this package (with the
opt-in `answer` signature, only where TensorFlow Text ops are
registered). On the JAX backend every signature is a `jax2tf`-converted
function (StableHLO in `XlaCallModule` ops); on TensorFlow it is a plain
TensorFlow graph.
"""

import inspect
import os
import shutil
import time

import keras
import keras_hub
import tensorflow as tf
from keras import ops

SIGNATURES = ("serving_default", "encode_av", "generate", "answer")
# `answer` is opt-in: its TensorFlow Text ops must be registered wherever
# the SavedModel is loaded (TF Serving has them; saved_model_cli does not).
DEFAULT_SIGNATURES = ("serving_default", "encode_av", "generate")

_DTYPES = {
    "video": tf.float32,
    "audio": tf.float32,
    "token_ids": tf.int32,
    "padding_mask": tf.int32,
    "question": tf.string,
}


def _input_names(backbone, signature):
    media = ["video"] + (["audio"] if backbone.use_audio else [])
    if signature == "encode_av":
        return media
    if signature == "answer":
        return media + ["question"]
    return media + ["token_ids", "padding_mask"]


def _input_shapes(backbone, batch, length):
    """Each input's shape, with `batch` and `length` for those dims."""
    return {
        "video": (batch, backbone.num_frames, *backbone.image_size, 3),
        "audio": (batch, backbone.num_audio_samples),
        "token_ids": (batch, length),
        "padding_mask": (batch, length),
        "question": (batch,),
    }


def _input_specs(backbone, names, batch_size, length):
    """`tf.TensorSpec`s named after the inputs; `None` dims are dynamic."""
    shapes = _input_shapes(backbone, batch_size, length)
    return [tf.TensorSpec(shapes[n], _DTYPES[n], name=n) for n in names]


def _jax_shapes(backbone, names, batch_size, length):
    """jax2tf `polymorphic_shapes`: one symbol for dims that must agree."""
    shapes = _input_shapes(
        backbone,
        "batch" if batch_size is None else batch_size,
        "length" if length is None else length,
    )
    return [f"({', '.join(str(d) for d in shapes[n])})" for n in names]


def _named_arguments(fn, names):
    """`fn(dict)` as a function of positional arguments called `names`.

    Signature input names come from the argument names of the traced
    function, on both backends.
    """

    def wrapper(*args):
        return fn(dict(zip(names, args)))

    wrapper.__signature__ = inspect.Signature(
        [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for n in names
        ]
    )
    return wrapper


def _check_output_dir(path, overwrite):
    """Whether `path` holds a SavedModel to replace; raises if not allowed."""
    if os.path.isfile(path):
        raise ValueError(f"Export path {path!r} is a file, not a directory.")
    if not os.path.isdir(path) or not os.listdir(path):
        return False
    if not overwrite:
        raise ValueError(
            f"Export directory {path!r} exists and is not empty. Choose a "
            "new directory, or pass overwrite=True (`--overwrite`) to "
            "replace the SavedModel in it."
        )
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(
            f"Export directory {path!r} is not empty and holds no SavedModel "
            "(no saved_model.pb); overwrite=True only replaces a SavedModel. "
            "Choose a new or empty directory."
        )
    return True


def _signature_functions(causal_lm, stop_token_ids):
    """The computation of each numeric signature, on a dict of inputs."""

    def serving_default(x):
        logits = causal_lm(x, training=False)
        return {"logits": ops.cast(logits, "float32")}

    def encode_av(x):
        av_latents = causal_lm.encode_media(x)
        return {"av_latents": ops.cast(av_latents, "float32")}

    def generate(x):
        outputs = causal_lm.generate_step(x, stop_token_ids=stop_token_ids)
        # The batch decodes until every row has stopped: zero what a row
        # generated after its own end token.
        token_ids = ops.where(outputs["padding_mask"], outputs["token_ids"], 0)
        return {"token_ids": ops.cast(token_ids, "int32")}

    return {
        "serving_default": serving_default,
        "encode_av": encode_av,
        "generate": generate,
    }


class _Exporter:
    """Adds one `keras.export.ExportArchive` endpoint per signature."""

    def __init__(self, causal_lm, batch_size, max_length, platforms):
        self.causal_lm = causal_lm
        self.backbone = causal_lm.backbone
        self.batch_size = batch_size
        self.max_length = max_length
        self.platforms = platforms
        self.archive = self._new_archive()

    def _new_archive(self):
        archive = keras.export.ExportArchive()
        # The backbone holds every weight; the task also references the
        # preprocessor, whose cached tf.functions cannot be saved.
        archive.track(self.backbone)
        return archive

    def _length(self, name):
        # `serving_default` scores any length up to max_sequence_length;
        # `generate` decodes into a buffer of exactly `max_length`.
        return None if name == "serving_default" else self.max_length

    def _endpoint(self, archive, name, fn, batch_size):
        names = _input_names(self.backbone, name)
        length = self._length(name)
        kwargs = {}
        if keras.backend.backend() == "jax":
            jax2tf_kwargs = {
                "polymorphic_shapes": _jax_shapes(
                    self.backbone, names, batch_size, length
                ),
                # Serving needs no gradients, and tf.saved_model.save
                # fails to trace them under shape polymorphism.
                "with_gradient": False,
            }
            if length is None:
                jax2tf_kwargs["polymorphic_constraints"] = (
                    f"length <= {self.backbone.max_sequence_length}",
                )
            if self.platforms:
                jax2tf_kwargs["native_serialization_platforms"] = tuple(
                    self.platforms
                )
            kwargs["jax2tf_kwargs"] = jax2tf_kwargs
        endpoint = archive.add_endpoint(
            name,
            _named_arguments(fn, names),
            _input_specs(self.backbone, names, batch_size, length),
            **kwargs,
        )
        # Trace now (not in write_out) to report failures per signature.
        endpoint.get_concrete_function()
        return endpoint

    def add(self, name, fn):
        try:
            return self._endpoint(self.archive, name, fn, self.batch_size)
        except Exception as error:
            if self.batch_size is not None:
                raise
            # Tell a dynamic-batch failure from any other: retrace the same
            # function with a fixed batch in a scratch archive.
            try:
                self._endpoint(self._new_archive(), name, fn, 1)
            except Exception:
                raise error
            raise ValueError(
                f"The `{name}` signature cannot be traced with a dynamic "
                f"batch size (it traces with a fixed one): "
                f"{type(error).__name__}: {error}\nSome code in the model "
                "needs a static batch size (e.g. a Python loop over the "
                "batch). Export with a fixed batch instead: "
                "`export_saved_model(..., batch_size=N)` or `keras-mirasol "
                "export --batch-size N`; the server then takes batches of "
                "exactly N clips."
            ) from error

    def add_answer(self, generate_endpoint):
        """String in, string out: tokenize, `generate`, detokenize."""
        preprocessor = self.causal_lm.preprocessor
        tokenizer = preprocessor.tokenizer
        max_length = self.max_length
        names = _input_names(self.backbone, "answer")
        specials = tf.constant(tokenizer.special_token_ids, tf.int32)
        unknown = tokenizer.token_to_id("<unk>")
        known = tokenizer.vocabulary_size()

        def answer(x):
            batch = tf.shape(x["question"])[0]
            # As `generate_preprocess`: prompt, no response, no end token.
            token_ids, _, _ = preprocessor.pack(
                preprocessor.tokenize(x["question"], batch),
                preprocessor.tokenize("", batch),
                max_length,
                add_end=False,
            )
            prompt_mask = tf.not_equal(token_ids, tokenizer.pad_token_id)
            media = [x[n] for n in names if n != "question"]
            generated = generate_endpoint(
                *media, token_ids, tf.cast(prompt_mask, tf.int32)
            )["token_ids"]
            # As `generate(strip_prompt=True)` and `generate_postprocess`:
            # drop the prompt and special tokens (end, and the zeros after
            # it); ids past the tokenizer's vocabulary read as unknown.
            special = tf.reduce_any(
                tf.equal(generated[..., None], specials), axis=-1
            )
            keep = tf.logical_and(tf.logical_not(prompt_mask), ~special)
            generated = tf.where(generated < known, generated, unknown)
            answers = tokenizer.detokenize(
                tf.ragged.boolean_mask(generated, keep)
            )
            return {"answer": tf.reshape(answers, [-1])}

        specs = _input_specs(self.backbone, names, self.batch_size, None)
        fn = tf.function(
            _named_arguments(answer, names),
            input_signature=specs,
            autograph=False,
        )
        fn.get_concrete_function()
        # The SentencePiece model is a TensorFlow resource the graph uses.
        self.archive.track(_sentence_piece_resource(tokenizer))
        return self.archive.add_endpoint("answer", fn)


def _sentence_piece_resource(tokenizer):
    """The `tf_text` SentencePiece tokenizer behind a keras-hub tokenizer.

    The `answer` graph uses that op's TensorFlow resource, and a SavedModel
    must track every resource its functions use. On the TensorFlow backend
    `ExportArchive.track(tokenizer)` would find it (a layer is a TensorFlow
    trackable there), but on JAX a Keras layer is not, and keras-hub has no
    public handle to the op: this is the one place that reads keras-hub's
    private `_sentence_piece`, and it fails with a clear error if that
    attribute ever goes away.
    """
    sentence_piece = getattr(tokenizer, "_sentence_piece", None)
    if not isinstance(sentence_piece, tf.Module):
        raise ValueError(
            "The `answer` signature needs a keras-hub SentencePieceTokenizer "
            "running on TensorFlow Text ops; got "
            f"{type(tokenizer).__name__}. Export without it: "
            "`signatures=('serving_default', 'encode_av', 'generate')`."
        )
    return sentence_piece


def _describe(fn):
    """Input and output shapes and dtypes of a traced signature function."""
    concrete = fn.get_concrete_function()
    args, kwargs = concrete.structured_input_signature
    inputs = {
        spec.name: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
        for spec in tf.nest.flatten((args, kwargs))
    }
    outputs = {
        name: {"dtype": out.dtype.name, "shape": out.shape.as_list()}
        for name, out in concrete.structured_outputs.items()
    }
    return {"inputs": inputs, "outputs": outputs}


def export_saved_model(
    causal_lm,
    path,
    max_length=None,
    batch_size=None,
    signatures=DEFAULT_SIGNATURES,
    platforms=None,
    overwrite=False,
    verbose=False,
    progress=None,
):
    """Export `causal_lm` as a SavedModel for TF Serving.

    Writes a SavedModel to `path`, the folder TF Serving loads as one
    model version (e.g. `models/mirasol/1`). `B` is dynamic (`None`)
    unless `batch_size` is given; media have the backbone's shapes:
    `video` float32 `[B, N, H, W, 3]` in `[0, 1]` and `audio` float32
    `[B, S]` (no `audio` input for a `use_audio=False` model).

    Signatures:

    - `serving_default`: `video`, `audio`, `token_ids` int32 `[B, L]`,
      `padding_mask` int32 `[B, L]` -> `logits` float32 `[B, L, vocab]`,
      the task's forward pass. `L` is dynamic, at most the backbone's
      `max_sequence_length`.
    - `encode_av`: `video`, `audio` -> `av_latents` float32
      `[B, T * m, av_hidden_dim]`, as `causal_lm.encode_media`.
    - `generate`: `video`, `audio`, `token_ids` and `padding_mask` int32
      `[B, max_length]` (prompts packed left-aligned as the preprocessor
      packs them for `generate()`: start token, prompt, zeros) ->
      `token_ids` int32 `[B, max_length]`: the prompt, then the greedy
      continuation up to and including the end token; every position
      after a row's end token is 0. It runs the model's `generate_step`
      with a `keras_hub.samplers.GreedySampler`, as `generate()` does
      (whatever sampler `compile()` set). Without a preprocessor there is
      no end token and rows decode to `max_length`.
    - `answer` (opt-in; needs a preprocessor; adds `generate`): `video`,
      `audio`, `question` string `[B]` -> `answer` string `[B]`, as
      `causal_lm.generate({"video", "audio", "prompts"})` for media of
      the model's shape. Tokenizing runs TensorFlow Text ops
      (`SentencepieceOp`), so the whole SavedModel then loads only where
      they are registered: TF Serving links them, Python needs `import
      tensorflow_text` before `tf.saved_model.load`, and
      `saved_model_cli run` cannot load it.

    Without `serving_default` in `signatures`, the first exported
    signature is also registered as `serving_default` (Keras'
    `ExportArchive` always sets one, as TF Serving expects).

    Export runs on the JAX and TensorFlow backends (not torch: save a
    preset there and export it from a JAX process).

    On the JAX backend each signature is converted with `jax2tf` (native
    serialization: StableHLO in `XlaCallModule` ops, with symbolic batch
    and length dimensions), which TF Serving runs with
    `--xla_cpu_compilation_enabled=true`, on the `platforms` it was
    exported for. On TensorFlow the signatures are plain TF graphs.

    Args:
        causal_lm: `MirasolCausalLM`.
        path: str. Output directory; must not exist or be empty.
        max_length: int or None. Prompt plus answer length of `generate`
            and `answer`, in `[2, max_sequence_length]`. Defaults to
            `None`, which means the preprocessor's `sequence_length`, else
            the backbone's `max_sequence_length`.
        batch_size: int or None. Fix the batch size of every signature,
            for models that cannot be traced with a dynamic batch.
            Defaults to `None` (dynamic).
        signatures: sequence of str. Which of `SIGNATURES` to export.
            Defaults to `("serving_default", "encode_av", "generate")`
            (`DEFAULT_SIGNATURES`: all but `answer`).
        platforms: sequence of str or None. JAX only: where the exported
            StableHLO may run, e.g. `("cpu", "cuda")`. Defaults to `None`,
            which means the platform JAX runs on while exporting.
        overwrite: bool. Replace a SavedModel already in `path`. A
            non-empty folder without `saved_model.pb` is never replaced.
            Defaults to `False`.
        verbose: bool. Print Keras' summary of the endpoints.
            Defaults to `False`.
        progress: callable or None. Called with a line of text as each
            signature is traced (`"export: [2/3] encode_av traced in
            4.1 s"`) and when the SavedModel is written; tracing takes
            seconds to minutes per signature. Defaults to `None` (silent).

    Returns:
        dict with `path` and `signatures`: for each signature, its
        `inputs` and `outputs`, each name mapped to `dtype` and `shape`
        (`None` for dynamic dimensions).

    Example:
    ```python
    lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
    export_saved_model(lm, "exported/1", max_length=16)
    served = tf.saved_model.load("exported/1")
    served.signatures["generate"](
        video=video,
        audio=audio,
        token_ids=token_ids,
        padding_mask=padding_mask,
    )["token_ids"]
    ```
    """
    if keras.backend.backend() not in ("jax", "tensorflow"):
        raise ValueError(
            "SavedModel export runs on the JAX or TensorFlow backend; this "
            f"process runs KERAS_BACKEND={keras.backend.backend()!r}. Save "
            "the model with `save_to_preset(run_dir)` (a preset loads on "
            "every backend), then export it from a JAX process: "
            "`KERAS_BACKEND=jax keras-mirasol export --model run_dir "
            "--out exported/1`."
        )
    backbone = causal_lm.backbone
    preprocessor = causal_lm.preprocessor
    path = os.fspath(path)
    signatures = list(signatures)
    unknown = [s for s in signatures if s not in SIGNATURES]
    if unknown or not signatures:
        raise ValueError(
            f"`signatures` must be a non-empty subset of {SIGNATURES}, got "
            f"{signatures}."
        )
    if "answer" in signatures and preprocessor is None:
        raise ValueError(
            "The `answer` signature tokenizes text and needs a model with a "
            "preprocessor (e.g. loaded with MirasolCausalLM.from_preset)."
        )
    if max_length is None:
        max_length = (
            preprocessor.sequence_length
            if preprocessor is not None
            else backbone.max_sequence_length
        )
    if not 2 <= max_length <= backbone.max_sequence_length:
        raise ValueError(
            f"`max_length` must be in [2, max_sequence_length="
            f"{backbone.max_sequence_length}], got {max_length}."
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    replace = _check_output_dir(path, overwrite)

    stop_token_ids = None
    if preprocessor is not None:
        stop_token_ids = (preprocessor.tokenizer.end_token_id,)
    functions = _signature_functions(causal_lm, stop_token_ids)
    numeric = [s for s in SIGNATURES if s in signatures and s != "answer"]
    if "answer" in signatures and "generate" not in numeric:
        numeric.append("generate")
    # Export greedy decoding whatever sampler `compile()` set.
    sampler = getattr(causal_lm, "sampler", None)
    causal_lm.sampler = keras_hub.samplers.GreedySampler()
    try:
        exporter = _Exporter(causal_lm, batch_size, max_length, platforms)
        endpoints = {}
        planned = numeric + (["answer"] if "answer" in signatures else [])
        for index, name in enumerate(planned, 1):
            began = time.time()
            if name == "answer":
                endpoints[name] = exporter.add_answer(endpoints["generate"])
            else:
                endpoints[name] = exporter.add(name, functions[name])
            if progress is not None:
                progress(
                    f"export: [{index}/{len(planned)}] {name} traced in "
                    f"{time.time() - began:.1f} s"
                )
        if replace:
            shutil.rmtree(path)
        began = time.time()
        exporter.archive.write_out(path, verbose=verbose)
        if progress is not None:
            progress(f"export: wrote {path} in {time.time() - began:.1f} s")
    finally:
        causal_lm.sampler = sampler
    described = {name: _describe(fn) for name, fn in endpoints.items()}
    if "serving_default" not in described:
        described["serving_default"] = described[numeric[0]]
    return {
        "path": path,
        "signatures": {
            name: described[name] for name in SIGNATURES if name in described
        },
    }
