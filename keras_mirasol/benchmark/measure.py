"""Our side of the benchmark, on the current Keras backend.

Every function builds what it times, runs it once to compile, then times
`steps` more calls and reports the median, min and max. Timings are wall
clock on whatever machine runs them: compare ratios from one run.
"""

import resource
import time

import keras
import numpy as np
from keras import ops

from keras_mirasol.benchmark.timing import time_calls
from keras_mirasol.layers.transformer_stack import unrolled_snippet_loops
from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.causal_lm import MirasolCausalLM


def compiled(fn):
    """`fn` compiled by the backend's XLA (JAX `jit`, TF `jit_compile`).

    Args:
        fn: a function of tensors.

    Returns:
        The compiled function; under torch, `fn` itself.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def _compiles():
    """Whether this backend compiles the step (not torch, which is eager)."""
    return keras.backend.backend() != "torch"


def _block(x):
    """Wait for `x` (any nest of tensors) and return it as numpy."""
    return keras.tree.map_structure(ops.convert_to_numpy, x)


def on_accelerator():
    """Whether this backend computes on an accelerator (GPU, TPU)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform != "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(
            tf.config.list_logical_devices("GPU")
            or tf.config.list_logical_devices("TPU")
        )
    import torch

    return torch.cuda.is_available()


def compute_dtype(dtype):
    """The dtype a Keras dtype policy computes in.

    Args:
        dtype: str or None. A policy name: `"float32"`, `"mixed_bfloat16"`
            (computes in bfloat16, keeps float32 weights), ... None is
            Keras' default, float32.

    Returns:
        str. E.g. `"bfloat16"` for `"mixed_bfloat16"`.
    """
    return (dtype or "float32").removeprefix("mixed_")


def product_and_one_entry(a, b):
    """`a @ b`, and its first entry as a float32 scalar to wait on.

    The whole product stays an output, so the compiler computes all of
    it; reading the entry back waits for it without copying it.
    """
    c = ops.matmul(a, b)
    return c, ops.cast(c[0, 0], "float32")


def matmul_peak(size=None, repeats=10, dtype="float32"):
    """The best matmul rate of this backend on this machine, in `dtype`.

    Only one entry of each product is read back to wait for it: copying
    the whole product to the host would be timed too, and on an
    accelerator that copy takes longer than the product.

    Args:
        size: int or None. Square matrix size. Defaults to 2048 on a CPU
            and 8192 on an accelerator, where a product of 2048 takes
            microseconds.
        repeats: int. Timed calls after one compile call. Defaults to
            `10`.
        dtype: str. The inputs' and the product's dtype, the compute
            dtype of the steps set against this peak (`"bfloat16"` for
            `"mixed_bfloat16"`). Defaults to `"float32"`.

    Returns:
        dict with `gflops` (the best call), `median_gflops`, `size` and
        `dtype`.
    """
    if size is None:
        size = 8192 if on_accelerator() else 2048
    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.normal(size=(size, size)), dtype)
    b = ops.convert_to_tensor(rng.normal(size=(size, size)), dtype)

    matmul = compiled(product_and_one_entry)
    _, _, timing = time_calls(
        lambda: ops.convert_to_numpy(matmul(a, b)[1]), repeats
    )
    flops = 2.0 * size**3
    return {
        "gflops": flops / timing["min_s"] / 1e9,
        "median_gflops": flops / timing["median_s"] / 1e9,
        "size": size,
        "dtype": dtype,
    }


def dtype_slowdown(dtype, size=256, repeats=5):
    """How many times slower this backend's products are in `dtype`.

    A quick probe before jobs in `dtype`: small square products in
    float32 and in `dtype` (`matmul_peak` at `size`). A CPU without
    instructions for `dtype` runs it through slow generic kernels (torch's
    bfloat16 products without AVX512-BF16: 60-125x slower than float32),
    where a training step in it would take hours.

    Args:
        dtype: str. The compute dtype, e.g. `"bfloat16"`.
        size: int. Square matrix size. Defaults to `256`.
        repeats: int. Timed products of each. Defaults to `5`.

    Returns:
        dict with `dtype`, `gflops` (in `dtype`), `float32_gflops` and
        `slowdown` (their ratio, float32 over `dtype`).
    """
    float32 = matmul_peak(size=size, repeats=repeats)["gflops"]
    other = matmul_peak(size=size, repeats=repeats, dtype=dtype)["gflops"]
    return {
        "dtype": dtype,
        "gflops": other,
        "float32_gflops": float32,
        "slowdown": float32 / other,
    }


def random_batch(config, batch_size, text_length=None, seed=0):
    """A training batch of random media and text for `config`.

    Args:
        config: dict. A `MirasolBackbone` config.
        batch_size: int.
        text_length: int. Defaults to `max_sequence_length`.
        seed: int.

    Returns:
        `(x, y, sample_weight)` of numpy arrays, as the preprocessor makes.
    """
    rng = np.random.default_rng(seed)
    length = text_length or config["max_sequence_length"]
    size = config["image_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = {
        "video": rng.uniform(
            size=(batch_size, config["num_frames"], *size, 3)
        ).astype("float32"),
        "token_ids": rng.integers(
            3, config["vocabulary_size"], size=(batch_size, length)
        ).astype("int32"),
        "padding_mask": np.ones((batch_size, length), "int32"),
    }
    if config.get("use_audio", True):
        samples = round(
            config["num_frames"]
            / config["frame_rate"]
            * config["audio_sample_rate"]
        )
        x["audio"] = (0.1 * rng.normal(size=(batch_size, samples))).astype(
            "float32"
        )
    y = np.roll(x["token_ids"], -1, axis=1)
    sample_weight = np.ones((batch_size, length), "float32")
    return x, y, sample_weight


def build_lm(config, dtype=None, learning_rate=1e-4):
    """A `MirasolCausalLM` without preprocessor, compiled with AdamW.

    The training step is XLA-compiled on every backend that can
    (`jit_compile=True`; Keras's `"auto"` leaves TensorFlow on a CPU
    without XLA).

    Args:
        config: dict. A `MirasolBackbone` config.
        dtype: str or None. E.g. `"mixed_bfloat16"`.
        learning_rate: float.

    Returns:
        `MirasolCausalLM`.
    """
    backbone = MirasolBackbone.from_config(dict(config, dtype=dtype))
    lm = MirasolCausalLM(backbone, preprocessor=None)
    lm.compile(
        optimizer=keras.optimizers.AdamW(learning_rate),
        jit_compile=_compiles(),
    )
    return lm


def jax_train_step_arguments(lm, batch):
    """The `(state, data)` a built model's JAX `train_step` takes.

    Args:
        lm: a compiled, built Keras model (JAX backend).
        batch: `(x, y, sample_weight)`.

    Returns:
        `(state, data)`: every variable's value (trainable, non-trainable,
        optimizer, metrics), and the batch as JAX arrays.
    """
    import jax

    state = lm._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
        purge_model_variables=False,
    )
    data = keras.tree.map_structure(jax.numpy.asarray, batch)
    return state, data


def xla_train_step_flops(lm, batch):
    """XLA's FLOP count of one compiled JAX training step.

    Args:
        lm: a compiled `MirasolCausalLM` (JAX backend).
        batch: `(x, y, sample_weight)`.

    Returns:
        float. The `flops` of the lowered step's cost analysis (the
        program before XLA's optimisations; within a few percent of the
        compiled program's count, without a second compile): forward,
        backward and the optimizer update.
    """
    import jax

    lm._symbolic_build(data_batch=batch)
    state, data = jax_train_step_arguments(lm, batch)
    # Loops over snippets unrolled: the cost analysis counts a loop's body
    # once, not once per snippet.
    with unrolled_snippet_loops():
        lowered = jax.jit(lm.train_step).lower(state, data)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


def xla_forward_flops(lm, x):
    """XLA's FLOP count of the backbone's forward pass (JAX backend)."""
    import jax

    values = [v.value for v in lm.backbone.trainable_variables]
    others = [v.value for v in lm.backbone.non_trainable_variables]
    data = keras.tree.map_structure(jax.numpy.asarray, x)

    def forward(values, others, data):
        outputs, _ = lm.backbone.stateless_call(values, others, data)
        return outputs

    with unrolled_snippet_loops():
        lowered = jax.jit(forward).lower(values, others, data)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


class _StepClock(keras.callbacks.Callback):
    """Records when each training step's loss is ready, and the losses.

    Reading the loss waits for the step: JAX dispatches a step and returns
    at once, so a clock that did not read it would time the dispatch, and
    a step that failed on the device (out of memory) would go unnoticed
    until later, or never, and look instantaneous.
    """

    def __init__(self):
        super().__init__()
        self.ends = []
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(ops.convert_to_numpy(logs["loss"])))
        self.ends.append(time.perf_counter())


def time_fit_steps(lm, batch, steps, on_compiled=None):
    """Seconds per training step of `lm.fit`, the loop users train with.

    A first `fit` call runs one step (compile); a second runs the batch
    `steps + 1` times and times the intervals between consecutive steps'
    ends, so the per-call setup of `fit` is not counted and, unlike
    `train_on_batch`, the model's variables stay on the device between
    steps.

    Args:
        lm: a compiled `MirasolCausalLM`.
        batch: `(x, y, sample_weight)` of numpy arrays.
        steps: int. Timed steps.
        on_compiled: optional function called after the compiling step.

    Returns:
        dict: `compile_s` (the first `fit` call, one step), `median_s`,
        `min_s`, `max_s`, `timed_steps`, `losses` (each step's loss, read
        when the step ends: a step that fails on the device raises there).
    """
    x, y, sample_weight = batch
    batch_size = len(y)
    repeats = steps + 1

    def tile(array):
        return np.concatenate([array] * repeats)

    start = time.perf_counter()
    lm.fit(
        x,
        y,
        sample_weight=sample_weight,
        batch_size=batch_size,
        shuffle=False,
        verbose=0,
        callbacks=[_StepClock()],
    )
    compile_s = time.perf_counter() - start
    if on_compiled is not None:
        on_compiled()
    clock = _StepClock()
    lm.fit(
        keras.tree.map_structure(tile, x),
        tile(y),
        sample_weight=tile(sample_weight),
        batch_size=batch_size,
        shuffle=False,
        verbose=0,
        callbacks=[clock],
    )
    seconds = np.diff(clock.ends)
    return {
        "compile_s": compile_s,
        "median_s": float(np.median(seconds)),
        "min_s": float(np.min(seconds)),
        "max_s": float(np.max(seconds)),
        "timed_steps": len(seconds),
        "losses": clock.losses,
    }


def peak_rss_mb():
    """This process's peak resident memory so far, in MiB (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_mb():
    """Peak memory of the first accelerator in MiB, or None on a CPU.

    JAX's `peak_bytes_in_use`, TensorFlow's `get_memory_info` peak or
    torch's `max_memory_allocated`: what the step needed on the device.
    """
    if not on_accelerator():
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else peak / 2**20
    if backend == "tensorflow":
        import tensorflow as tf

        # A TPU has no `GPU:0` memory to read.
        if not tf.config.list_physical_devices("GPU"):
            return None
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def time_train_step(config, batch_size=2, steps=10, dtype=None, seed=0):
    """Time the task's training step (AdamW, XLA-compiled) inside `fit`.

    Args:
        config: dict. A `MirasolBackbone` config.
        batch_size: int.
        steps: int. Timed steps after the compiling one.
        dtype: str or None.
        seed: int.

    Returns:
        dict: `compile_s` (the first `fit` call, one step, less a
        step's median; None on torch, which compiles nothing), `median_s`,
        `min_s`, `max_s`, `samples_per_s`, `parameters`, `traces` (times
        the step function was traced by the first call: 1 on JAX, 2 on
        TensorFlow, whose `tf.function` traces again after creating
        variables), `retraces` (traces during the timed steps: 0 when
        nothing recompiles; both None on torch, which runs eagerly), and
        on JAX `xla_flops`. Memory: `start_rss_mb` (the process before
        the model is built: the backend and its libraries),
        `peak_rss_mb` (the process's peak, compiling included) and
        `device_peak_mb` (the accelerator's peak; None on a CPU).
    """
    start_rss = peak_rss_mb()
    keras.utils.set_random_seed(seed)
    lm = build_lm(config, dtype=dtype)
    batch = random_batch(config, batch_size, seed=seed)
    traces = []
    train_step = lm.train_step

    def counting_train_step(*args, **kwargs):
        traces.append(1)
        return train_step(*args, **kwargs)

    lm.train_step = counting_train_step
    compile_traces = None

    def on_compiled():
        nonlocal compile_traces
        compile_traces = len(traces)

    result = time_fit_steps(lm, batch, steps, on_compiled=on_compiled)
    result.update(
        compile_s=result["compile_s"] - result["median_s"],
        samples_per_s=batch_size / result["median_s"],
        parameters=lm.backbone.count_params(),
        traces=compile_traces,
        retraces=len(traces) - compile_traces,
        batch_size=batch_size,
        start_rss_mb=start_rss,
        peak_rss_mb=peak_rss_mb(),
        device_peak_mb=device_peak_mb(),
    )
    if not _compiles():
        # Eager: the step function runs every step, nothing is traced or
        # compiled.
        result.update(traces=None, retraces=None, compile_s=None)
    lm.train_step = train_step
    if keras.backend.backend() == "jax":
        result["xla_flops"] = xla_train_step_flops(lm, batch)
    return result


def uncached_decode_function(lm, new_tokens):
    """Greedy decoding that runs the text decoder over the whole prefix.

    Each new token costs one full decoder pass over `[B, L]`: no
    key/value cache.

    Args:
        lm: `MirasolCausalLM`.
        new_tokens: int.

    Returns:
        A function `(av_latents, token_ids, padding_mask) -> token_ids`
        filling the last `new_tokens` positions of `token_ids`.
    """
    decoder = lm.backbone.text_decoder

    def next_token(token_ids, padding_mask, av_latents, index):
        hidden = decoder(token_ids, av_latents, padding_mask)
        logits = decoder.token_embedding(hidden, reverse=True)
        logits = ops.take(logits, index - 1, axis=1)
        return ops.cast(ops.argmax(logits, axis=-1), "int32")

    next_token = compiled(next_token)

    def decode(av_latents, token_ids, padding_mask):
        token_ids = ops.convert_to_tensor(token_ids)
        padding_mask = ops.convert_to_tensor(padding_mask)
        length = ops.shape(token_ids)[1]
        for index in range(length - new_tokens, length):
            token = next_token(
                token_ids,
                padding_mask,
                av_latents,
                ops.convert_to_tensor(index, "int32"),
            )
            position = ops.one_hot(index, length, dtype="int32")[None, :]
            token_ids = token_ids * (1 - position) + token[:, None] * position
            padding_mask = ops.maximum(padding_mask, position)
        return token_ids

    return decode


def uncached_generate_function(lm, new_tokens):
    """`generate()` without caches: media once, then full decoder passes.

    Args:
        lm: `MirasolCausalLM`.
        new_tokens: int.

    Returns:
        A function of backbone inputs whose `token_ids` hold the prompt in
        the first `L - new_tokens` positions; returns the filled
        `token_ids`.
    """
    encode = compiled(lm.encode_media)
    decode = uncached_decode_function(lm, new_tokens)

    def generate(inputs):
        return decode(
            encode(inputs), inputs["token_ids"], inputs["padding_mask"]
        )

    return generate


def _time_calls(fn, steps):
    """`(first output, timing dict)` of `steps` calls after a first one."""
    first, compile_s, timing = time_calls(lambda: _block(fn()), steps)
    timing["compile_s"] = compile_s - timing["median_s"]
    return first, timing


def time_generation(
    config, new_tokens=32, batch_size=2, prompt_length=4, steps=5, seed=0
):
    """Answer tokens per second with the caches and without.

    Every variant decodes greedily `new_tokens` after a `prompt_length`
    prompt; the text sequence is `prompt_length + new_tokens` long (the
    config's `max_sequence_length` is raised to fit). `cached` and
    `uncached` are whole calls from the clip (the media side once, then
    decoding, as `generate()` does); `cached_decode` and `uncached_decode`
    decode from latents already computed, the part the caches change.

    Returns:
        dict with a timing per variant (`median_s`, ..., `compile_s`
        (None on torch), `tokens_per_s`), `speedup` (uncached / cached
        median time, whole calls), `decode_speedup` (the same for
        decoding alone), `traces` (times `generate_step` was traced by
        the first call), `retraces` (traces in later calls: 0 when
        nothing recompiles; both None on torch, which runs eagerly) and
        `same_tokens` (whether every variant decoded the same answer).
    """
    length = prompt_length + new_tokens
    config = dict(
        config,
        max_sequence_length=max(config["max_sequence_length"], length),
    )
    keras.utils.set_random_seed(seed)
    lm = build_lm(config)
    x, _, _ = random_batch(config, batch_size, text_length=length, seed=seed)
    x["token_ids"][:, prompt_length:] = 0
    x["padding_mask"][:, prompt_length:] = 0
    traces = []
    generate_step = lm.generate_step

    def counting_generate_step(*args, **kwargs):
        traces.append(1)
        return generate_step(*args, **kwargs)

    lm.generate_step = counting_generate_step
    av_latents = _block(compiled(lm.encode_media)(x))
    cached_decode = compiled(
        lambda av, ids, mask: lm.generate_from_latents(av, ids, mask)[
            "token_ids"
        ]
    )
    uncached_decode = uncached_decode_function(lm, new_tokens)
    uncached = uncached_generate_function(lm, new_tokens)
    variants = {
        "cached": lambda: lm.generate(
            x, stop_token_ids=None, strip_prompt=False
        )["token_ids"],
        "uncached": lambda: uncached(x),
        "cached_decode": lambda: cached_decode(
            av_latents, x["token_ids"], x["padding_mask"]
        ),
        "uncached_decode": lambda: uncached_decode(
            av_latents, x["token_ids"], x["padding_mask"]
        ),
    }
    result = {"new_tokens": new_tokens, "batch_size": batch_size}
    answers = {}
    first_traces = 0
    for name, fn in variants.items():
        answers[name], timing = _time_calls(fn, steps)
        if name == "cached":
            first_traces = len(traces)
        timing["tokens_per_s"] = batch_size * new_tokens / timing["median_s"]
        result[name] = timing
    lm.generate_step = generate_step
    result["speedup"] = (
        result["uncached"]["median_s"] / result["cached"]["median_s"]
    )
    result["decode_speedup"] = (
        result["uncached_decode"]["median_s"]
        / result["cached_decode"]["median_s"]
    )
    result["traces"] = first_traces
    result["retraces"] = len(traces) - first_traces
    if not _compiles():
        result.update(traces=None, retraces=None)
        for name in variants:
            result[name]["compile_s"] = None
    result["same_tokens"] = all(
        np.array_equal(answers["cached"], answer) for answer in answers.values()
    )
    return result


def time_stream(config, snippets=64, batch_size=1, around=4, seed=0):
    """Seconds per snippet appended to a `MirasolStream`, early and late.

    A stream with a window of `snippets + 1` takes `snippets + 1` random
    snippets (`0 .. snippets`), each timed until its latents are ready.
    The first append compiles; `early_s` is the median of snippets
    `1 .. around`, `late_s` that of the last `around` (up to snippet
    `snippets`): with a flat cost per snippet their ratio stays near 1.

    Args:
        config: dict. A `MirasolBackbone` config.
        snippets: int. Index of the last snippet. Defaults to `64`.
        batch_size: int. Streams side by side. Defaults to `1`.
        around: int. Snippets in each median. Defaults to `4`.
        seed: int. Defaults to `0`.

    Returns:
        dict with `early_s`, `late_s`, `late_over_early`, `compile_s`
        (the first append; None on torch), `window`, `snippets`,
        `batch_size` and `traces` (None on torch, which runs eagerly).
    """
    keras.utils.set_random_seed(seed)
    lm = build_lm(config)
    stream = lm.stream(batch_size=batch_size, window=snippets + 1)
    x, _, _ = random_batch(
        dict(
            config,
            num_frames=stream.frames_per_snippet,
            num_snippets=1,
        ),
        batch_size,
        seed=seed,
    )
    seconds = []
    for _ in range(snippets + 1):
        start = time.perf_counter()
        _block(stream.append(x["video"], x.get("audio")))
        seconds.append(time.perf_counter() - start)
    early = float(np.median(seconds[1 : 1 + around]))
    late = float(np.median(seconds[-around:]))
    return {
        "early_s": early,
        "late_s": late,
        "late_over_early": late / early,
        "compile_s": seconds[0] if _compiles() else None,
        "window": stream.window,
        "snippets": snippets,
        "batch_size": batch_size,
        "traces": stream.traces if _compiles() else None,
    }


def _part_calls(backbone, x):
    """`{name: (layer, call, inputs, differentiable)}` for each part.

    Each part gets the inputs the backbone would give it for `x`, computed
    once here; `call(layer, inputs)` runs it, and `differentiable` lists
    the inputs that come from another part, whose gradient the training
    step needs (not the raw media or the token ids).
    """
    video = ops.convert_to_tensor(x["video"])
    audio = ops.convert_to_tensor(x["audio"])
    token_ids = ops.convert_to_tensor(x["token_ids"])
    padding_mask = ops.convert_to_tensor(x["padding_mask"])
    video_tokens = backbone.video_encoder(video)
    audio_tokens = backbone.audio_encoder(audio)
    combined = backbone.combiner(video_tokens, audio_tokens)
    av_latents = backbone.av_decoder(combined)
    return {
        "video_encoder": (
            backbone.video_encoder,
            lambda layer, a: layer(a[0]),
            [video],
            [],
        ),
        "audio_encoder": (
            backbone.audio_encoder,
            lambda layer, a: layer(a[0]),
            [audio],
            [],
        ),
        "combiner": (
            backbone.combiner,
            lambda layer, a: layer(a[0], a[1]),
            [video_tokens, audio_tokens],
            [0, 1],
        ),
        "av_decoder": (
            backbone.av_decoder,
            lambda layer, a: layer(a[0]),
            [combined],
            [0],
        ),
        "text_decoder": (
            backbone.text_decoder,
            lambda layer, a: layer(a[0], a[1], a[2]),
            [token_ids, av_latents, padding_mask],
            [1],
        ),
    }


def _part_step(layer, call, inputs, float_inputs):
    """A compiled forward+backward of `layer` on `inputs`.

    The loss is the sum of squares of the output; gradients are taken
    for the layer's trainable variables and `inputs[i]` for `i` in
    `float_inputs`, as the training step takes them.

    Returns:
        `(step, flops)`: `step()` runs once and returns numpy arrays;
        `flops` is XLA's count (JAX) or None.
    """
    backend = keras.backend.backend()

    def loss_of(outputs):
        return ops.sum(ops.square(ops.cast(outputs, "float32")))

    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        others = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, float_values, others, inputs):
            inputs = list(inputs)
            for i, value in zip(float_inputs, float_values):
                inputs[i] = value
            mapping = list(zip(layer.trainable_variables, trainable))
            mapping += list(zip(layer.non_trainable_variables, others))
            with keras.StatelessScope(state_mapping=mapping):
                return loss_of(call(layer, inputs))

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        float_values = [inputs[i] for i in float_inputs]
        arguments = (trainable, float_values, others, inputs)
        cost = step.lower(*arguments).cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        return (lambda: _block(step(*arguments))), float(cost["flops"])
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(inputs):
            with tf.GradientTape() as tape:
                tape.watch([inputs[i] for i in float_inputs])
                value = loss_of(call(layer, inputs))
            sources = layer.trainable_variables + [
                inputs[i] for i in float_inputs
            ]
            return value, tape.gradient(value, sources)

        return (lambda: _block(step(inputs))), None
    import torch

    def torch_step():
        sources = [inputs[i].detach().requires_grad_() for i in float_inputs]
        current = list(inputs)
        for i, source in zip(float_inputs, sources):
            current[i] = source
        value = loss_of(call(layer, current))
        weights = [v.value for v in layer.trainable_variables]
        grads = torch.autograd.grad(value, weights + sources)
        return _block((value, list(grads)))

    return torch_step, None


def time_parts(config, batch_size=2, steps=10, seed=0):
    """Forward+backward time of each part of the backbone on its own.

    Shows where a training step's time goes: each encoder, the Combiner,
    the autoregressive AV decoder and the text decoder, each compiled
    alone (no optimizer). The parts' sum is close to, not equal to, the
    full step, which also updates the weights and lets XLA fuse across
    parts.

    Returns:
        dict `{part: {median_s, min_s, max_s, compile_s, flops}}` with
        `flops` XLA's count on JAX (None elsewhere).
    """
    keras.utils.set_random_seed(seed)
    backbone = build_lm(config).backbone
    x, _, _ = random_batch(config, batch_size, seed=seed)
    result = {}
    for name, part in _part_calls(backbone, x).items():
        step, flops = _part_step(*part)
        _, compile_s, timing = time_calls(step, steps)
        timing.update(compile_s=compile_s - timing["median_s"], flops=flops)
        result[name] = timing
    return result
