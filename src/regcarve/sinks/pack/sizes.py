"""Volume sizes as people write them: `4G`, `4.7GB`, `700M`, `4095MiB`, `650000000`."""

from __future__ import annotations

import re

# K, M, G, T alone and KiB … TiB are powers of 1024 (what file systems limit); KB … TB are powers of 1000
# (what disc makers print: a "4.7 GB" DVD holds 4.7 × 10^9 bytes).
_UNITS = {"": 1, "B": 1,
          "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
SIZE_HELP = ("K, M, G, T and KiB … TiB are powers of 1024; KB, MB, GB, TB powers of 1000 "
             "(4G = 4 GiB, 4.7GB = 4,700,000,000 bytes, 700M = 700 MiB)")


def parse_size(text: str) -> int:
    """Bytes; ValueError saying what is accepted."""
    match = _SIZE.fullmatch(text)
    unit = match and _UNITS.get(match.group(2).upper())
    if not match or unit is None:
        raise ValueError(f"{text!r} is not a size: {SIZE_HELP}")
    whole, _, fraction = match.group(1).partition(".")
    # exact arithmetic: 4.7GB is 4,700,000,000, not a float's neighbour
    scale = 10 ** len(fraction)
    return (int(whole) * scale + int(fraction or 0)) * unit // scale
