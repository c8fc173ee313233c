"""Cached decoding: our cache writes against keras-hub's cached block calls.

    KERAS_BACKEND=jax python tools/profile_generate.py --new-tokens 64

Builds the peer-matched model of `keras-mirasol bench`, encodes one clip
and compiles greedy decoding from its latents (`generate_from_latents`,
batch 2, a 4-token prompt) twice: as the library runs it
(`TextDecoder.call_with_cache`: blocks on token rows, new keys and values
written in place into each block's heads-first caches) and through
keras-hub's own cached block calls (keras-hub's cache layout, each
block's cache sliced out, updated and the caches stacked again:
`_keras_hub_blocks_call` of tests/models/test_text_decoder.py, where a
test checks that both compute the same). Both must decode the same
tokens. The two are timed alternately in one process (`--rounds` calls
each), so both see the same machine, and
the script prints their medians and ratio. On JAX, `--profile` adds XLA's
kernels per call by kind for the library's decoding (as
tools/profile_step.py does for a training step). Start Python with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` as `keras-mirasol` does. Run
nothing else meanwhile.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    import keras
    import numpy as np

    from keras_mirasol.benchmark import configs
    from keras_mirasol.benchmark import measure
    from tests.models.test_text_decoder import _in_keras_hub_layout
    from tests.models.test_text_decoder import _keras_hub_blocks_call

    prompt = 4
    length = prompt + args.new_tokens
    config = configs.peer_matched_config()
    config["max_sequence_length"] = max(config["max_sequence_length"], length)
    keras.utils.set_random_seed(0)
    lm = measure.build_lm(config)
    x, _, _ = measure.random_batch(config, 2, text_length=length, seed=0)
    x["token_ids"][:, prompt:] = 0
    x["padding_mask"][:, prompt:] = 0
    av_latents = measure._block(measure.compiled(lm.encode_media)(x))
    decoder = lm.backbone.text_decoder
    ours = decoder.call_with_cache

    ours_init = decoder.init_cache

    def keras_hub_init(*args):
        # keras-hub's layout, `[B, layers, 2, slots, heads, head_dim]`.
        return _in_keras_hub_layout(ours_init(*args))

    def keras_hub_blocks(token_ids, cache, index, cross_index=None):
        cache = dict(cache, av_padding_mask=cache.get("av_padding_mask"))
        hidden, cache = _keras_hub_blocks_call(
            decoder, token_ids, cache, index, cross_index
        )
        cache.pop("av_padding_mask")
        return hidden, cache

    def decoding(call_with_cache, init_cache):
        decoder.call_with_cache = call_with_cache
        decoder.init_cache = init_cache
        fn = measure.compiled(
            lambda av, ids, mask: lm.generate_from_latents(av, ids, mask)[
                "token_ids"
            ]
        )
        tokens = measure._block(
            fn(av_latents, x["token_ids"], x["padding_mask"])
        )
        decoder.call_with_cache = ours
        decoder.init_cache = ours_init
        return fn, tokens

    variants = {
        "ours": decoding(ours, ours_init),
        "keras-hub": decoding(keras_hub_blocks, keras_hub_init),
    }
    same = np.array_equal(variants["ours"][1], variants["keras-hub"][1])
    times = {name: [] for name in variants}

    def call(name):
        start = time.perf_counter()
        fn = variants[name][0]
        measure._block(fn(av_latents, x["token_ids"], x["padding_mask"]))
        return time.perf_counter() - start

    for name in variants:
        call(name)
    for r in range(args.rounds):
        for name in list(variants)[:: 1 if r % 2 else -1]:
            times[name].append(call(name))
    ms = {name: 1000 * np.median(t) for name, t in times.items()}
    print(
        f"{keras.backend.backend()}, {args.new_tokens} new tokens, batch 2, "
        f"median of {args.rounds} alternated calls: ours {ms['ours']:.1f} "
        f"ms, keras-hub cached blocks {ms['keras-hub']:.1f} ms, ratio "
        f"{ms['keras-hub'] / ms['ours']:.2f}x; same tokens: {same}"
    )
    if args.profile and keras.backend.backend() == "jax":
        import jax

        from tools.profile_step import kernel_times

        folder = tempfile.mkdtemp()
        with jax.profiler.trace(folder):
            for _ in range(5):
                call("ours")
        by_kind, _ = kernel_times(folder, 5)
        total = sum(by_kind.values())
        print(f"kernels {total:.1f} ms per call")
        for kind, milliseconds in by_kind.most_common(12):
            share = 100 * milliseconds / total
            print(f"{milliseconds:8.1f} ms {share:5.1f}%  {kind}")


if __name__ == "__main__":
    main()
