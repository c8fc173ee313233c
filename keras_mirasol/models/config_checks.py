"""Checks on model configuration values, with errors that name the key."""


def check_divisible(key, value, divisor_key, divisor, component):
    """Raise a `ValueError` unless `value % divisor == 0`.

    Args:
        key: str. Config key (or derived quantity) holding `value`.
        value: int. The quantity to split.
        divisor_key: str. Config key holding `divisor`.
        divisor: int. The part size or count.
        component: str. The model part that needs the split.
    """
    if divisor <= 0 or value % divisor:
        raise ValueError(
            f"{component}: `{key}`={value} must be divisible by "
            f"`{divisor_key}`={divisor}. Change one of the two config keys."
        )
