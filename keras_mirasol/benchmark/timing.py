"""The one timing loop every benchmark job uses."""

import statistics
import time


def time_calls(fn, steps):
    """Call `fn` once (compile, warm up), then time `steps` more calls.

    `fn` must return only when its work is done (a Python value or a
    numpy array, not a pending device buffer).

    Args:
        fn: a function of no arguments.
        steps: int. Timed calls.

    Returns:
        `(first output, first call seconds, summary)`; the summary has
        `median_s`, `min_s`, `max_s` and `timed_steps`.
    """
    start = time.perf_counter()
    first = fn()
    first_seconds = time.perf_counter() - start
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    summary = {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "timed_steps": len(seconds),
    }
    return first, first_seconds, summary
