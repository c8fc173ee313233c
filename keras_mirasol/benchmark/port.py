"""The public PyTorch port (`mirasol-pytorch`) timed the way we time ours.

Needs the optional `bench` extra (`pip install -e ".[bench]"`): torch,
`mirasol-pytorch`, `x-transformers`, `einops`, `beartype`. The model is
`configs.port_config(...)`, the twin of our `peer-matched` config; inputs
are random, of `configs.port_inputs_shape(...)`.
"""

import numpy as np

from keras_mirasol.benchmark.configs import PORT_HEAD_MODULES
from keras_mirasol.benchmark.configs import port_config
from keras_mirasol.benchmark.configs import port_inputs_shape
from keras_mirasol.benchmark.timing import time_calls


def port_available():
    """`None` if the port imports, else the reason it does not."""
    try:
        import mirasol_pytorch  # noqa: F401
        import torch  # noqa: F401
    except Exception as error:  # any import failure means "not available"
        return (
            f"{type(error).__name__}: {error}. Install the optional extra: "
            'pip install -e ".[bench]"'
        )
    return None


def port_parameters(model):
    """`(total, without the reconstruction heads)` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    heads = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.split(".")[0] in PORT_HEAD_MODULES
    )
    return total, total - heads


def build_port(frames, spectrogram_frames_per_clip, threads, seed=0):
    """The port's `Mirasol` and random inputs for one batch.

    Returns:
        `(model, make_inputs)` where `make_inputs(batch_size)` gives a dict
        of `video`, `audio` and `text` tensors.
    """
    import torch
    from mirasol_pytorch import Mirasol

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = Mirasol(**port_config(frames, spectrogram_frames_per_clip))
    shapes = port_inputs_shape(frames, spectrogram_frames_per_clip)

    def make_inputs(batch_size, text_length=None):
        rng = np.random.default_rng(seed)
        text_shape = (batch_size, text_length or shapes["text"][0])
        return {
            "video": torch.from_numpy(
                rng.uniform(size=(batch_size, *shapes["video"])).astype(
                    "float32"
                )
            ),
            "audio": torch.from_numpy(
                rng.normal(size=(batch_size, *shapes["audio"])).astype(
                    "float32"
                )
            ),
            "text": torch.from_numpy(
                rng.integers(1, 256, size=text_shape).astype("int64")
            ),
        }

    return model, make_inputs


def time_port_train_step(
    frames=16,
    spectrogram_frames_per_clip=1024,
    batch_size=2,
    steps=10,
    threads=2,
):
    """Time the port's training step (forward, backward, AdamW).

    Returns:
        dict: `median_s`, `min_s`, `max_s`, `first_step_s`,
        `samples_per_s`, `parameters`, `threads`, `inputs` (shapes), and
        `flops` (torch's `FlopCounterMode` over one step: matmuls,
        convolutions and attention, forward and backward).
    """
    import torch

    model, make_inputs = build_port(
        frames, spectrogram_frames_per_clip, threads
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = make_inputs(batch_size)

    def step():
        optimizer.zero_grad()
        loss = model(**inputs)
        loss.backward()
        optimizer.step()
        return float(loss)

    _, first, result = time_calls(step, steps)
    # One more step, not timed, under torch's FLOP counter (matmuls,
    # convolutions and attention of the forward and backward passes).
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    total, without_heads = port_parameters(model)
    result.update(
        flops=float(counter.get_total_flops()),
        first_step_s=first,
        samples_per_s=batch_size / result["median_s"],
        parameters=total,
        parameters_without_heads=without_heads,
        threads=torch.get_num_threads(),
        batch_size=batch_size,
        inputs={k: list(v.shape) for k, v in inputs.items()},
    )
    return result


def time_port_generation(
    new_tokens=32,
    frames=16,
    spectrogram_frames_per_clip=1024,
    batch_size=2,
    prompt_length=4,
    steps=5,
    threads=2,
):
    """Time the port's `generate` (its own sampling loop, no grad).

    Returns:
        dict: `median_s`, ..., `tokens_per_s`.
    """
    import torch

    model, make_inputs = build_port(
        frames, spectrogram_frames_per_clip, threads
    )
    model.eval()
    inputs = make_inputs(batch_size, text_length=prompt_length)

    def run():
        with torch.no_grad():
            return model.generate(
                seq_len=new_tokens,
                prompt=inputs["text"],
                video=inputs["video"],
                audio=inputs["audio"],
            )

    out, first, result = time_calls(run, steps)
    result.update(
        first_call_s=first,
        tokens_per_s=batch_size * new_tokens / result["median_s"],
        new_tokens=int(out.shape[-1]),
        batch_size=batch_size,
        threads=torch.get_num_threads(),
    )
    return result
