"""How the toy model reads words: a prompt piece's words (`words_of`) and the stable pseudo-random
draw behind a non-attribute word's vector (`hashed_normal`). Shared by the prompt -> mixture weights
(lib_pinning.toy), the effective emphasis weight (lib_pinning.toy_failures) and the toy CLIP's text
encoder (lib_pinning.toy_clip), below all three; the design of the word vectors: lib_pinning.toy's
docstring."""

from __future__ import annotations

import hashlib
import math
import re
import struct

import torch

_WORD_RE = re.compile(r"[^\W_]+")


def hashed_normal(text: str, count: int) -> torch.Tensor:
    """`count` standard normal float64 values derived from SHA-256 of `text` (Box-Muller).

    Python's hash() is salted per process and numpy/torch generator streams may change between
    versions; a hash plus Box-Muller depends only on the text, so word vectors are identical in
    every process, on every platform, forever.
    """
    values: list[float] = []
    block = 0
    while len(values) < count:
        digest = hashlib.sha256(f"sd-prompt-pinning/toy/{block}/{text}".encode("utf-8")).digest()
        for off in range(0, 32, 16):
            a, b = struct.unpack(">QQ", digest[off : off + 16])
            u1 = (a + 1) / 2.0**64  # in (0, 1]: log(u1) is finite
            u2 = b / 2.0**64
            radius = math.sqrt(-2.0 * math.log(u1))
            values.append(radius * math.cos(2.0 * math.pi * u2))
            values.append(radius * math.sin(2.0 * math.pi * u2))
        block += 1
    return torch.tensor(values[:count], dtype=torch.float64)


def words_of(text: str) -> list[str]:
    """Lowercase words of a prompt piece; underscores split too, so booru tags read as words."""
    return _WORD_RE.findall(text.lower())
