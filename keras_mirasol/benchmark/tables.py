"""Markdown tables of the benchmark's results."""


def table(headers, rows):
    """A Markdown table of `rows` (lists of cells) under `headers`."""
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows))
        for i, h in enumerate(headers)
    ]
    lines = [
        "| "
        + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths))
        + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(str(c).ljust(w) for c, w in zip(row, widths))
            + " |"
        )
    return "\n".join(lines)


def number(value, digits=3):
    """`value` to `digits` significant digits; `-` for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def millions(value):
    """`12.3M` for 12.3 million."""
    return f"{value / 1e6:.1f}M"
