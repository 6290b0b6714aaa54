"""CLIP tokenizer access for token-granularity prompt units.

What the prompt module needs from a tokenizer is small (see :class:`Tokenizer`): the character
spans of the CLIP *pre-tokens* of a text, and a token count.

Why pre-tokens and not BPE tokens: the WebUI tokenizes every emphasis chunk on its own
(``modules/sd_hijack_clip.py`` calls the tokenizer once per ``(text, weight)`` pair that
``parse_prompt_attention`` returns). CLIP's BPE marks the last sub-token of a word with ``</w>``, so
giving ``photo`` and ``realistic`` (the two BPE tokens of ``photorealistic``) different weights
would make the WebUI encode ``photo</w>`` and ``realistic</w>``: tokens the model never saw for that
word. A pre-token (the tokenizer's regex split: a run of letters, a single digit, a run of
punctuation, an English contraction) is the finest piece that can be weighted on its own without
changing the token ids, because BPE merges never cross pre-token boundaries. Whitespace between
pre-tokens is discarded by the tokenizer. ``tests/test_tokenizer.py`` checks this claim against the
real vocabulary.

The tokenizer cleans text before splitting it (ftfy, HTML unescaping, lower-casing), so a
pre-token boundary found on the raw text is not always one on the cleaned text (``&amp;``, a curly
apostrophe before ``s``). :meth:`EncodingTokenizer.pretoken_spans` therefore checks every boundary
with the encoder and merges the neighbours when encoding them apart differs from encoding them
together.

Two implementations:

* :func:`default_tokenizer` -- open_clip's ``SimpleTokenizer`` with the BPE vocabulary bundled in the
  ``open_clip_torch`` wheel. Only ``open_clip/tokenizer.py`` is loaded (it needs ftfy, regex, numpy
  and torch); the ``open_clip`` package itself is never imported, because its ``__init__`` imports
  torchvision and the whole model zoo. Nothing is downloaded.
* :func:`adapt_tokenizer` -- wraps a tokenizer supplied by the caller, e.g. the loaded model's CLIP
  tokenizer inside the WebUI (a Hugging Face ``CLIPTokenizer`` for SD 1.x/SDXL, open_clip's
  ``SimpleTokenizer`` for SD 2.x), or any callable ``text -> token ids``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CLIP_PRETOKEN_PATTERN",
    "EncodingTokenizer",
    "Tokenizer",
    "TokenizerUnavailableError",
    "adapt_tokenizer",
    "default_tokenizer",
]

logger = logging.getLogger(__name__)

#: CLIP's pre-tokenizer split (case-insensitive): contractions, a run of letters, one digit, or a
#: run of anything that is neither whitespace, letter nor digit.
CLIP_PRETOKEN_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

_OPEN_CLIP_MODULE_NAME = "_lib_pinning_open_clip_tokenizer"


class TokenizerUnavailableError(ImportError):
    """The CLIP tokenizer cannot be loaded (missing package or vocabulary)."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the prompt module needs from a tokenizer."""

    def pretoken_spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character spans of ``text`` that are tokenized independently.

        Spans are sorted, do not overlap, and never contain only whitespace; encoding the spans one
        by one must give the same token ids as encoding ``text`` whole.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Number of BPE tokens of ``text`` (without start/end tokens)."""
        ...


class EncodingTokenizer:
    """A :class:`Tokenizer` built from an encoder function and CLIP's pre-token regex.

    Args:
        encode: ``text -> token ids`` without start/end tokens.
        pattern: a compiled ``regex`` pattern giving candidate pre-tokens on the raw text; the
            default is :data:`CLIP_PRETOKEN_PATTERN`.
        name: for messages and ``repr``.
    """

    def __init__(self, encode: Callable[[str], Sequence[int]], pattern: Any = None, name: str = "tokenizer") -> None:
        self._encode = encode
        self._pattern = pattern if pattern is not None else _compile_clip_pattern()
        self.name = name

    def __repr__(self) -> str:
        return f"EncodingTokenizer({self.name})"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no start/end tokens)."""
        return [int(token) for token in self._encode(text)]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def pretoken_spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for match in self._pattern.finditer(text):
            start, end = match.span()
            if spans:
                prev_start, prev_end = spans[-1]
                joined = self.encode(text[prev_start:end])
                apart = self.encode(text[prev_start:prev_end]) + self.encode(text[start:end])
                if joined != apart:
                    # The cleaning step glued these candidates together (see the module docstring).
                    spans[-1] = (prev_start, end)
                    continue
            spans.append((start, end))
        return spans


def _compile_clip_pattern() -> Any:
    try:
        import regex
    except ImportError as exc:  # pragma: no cover - regex ships with open_clip and transformers
        raise TokenizerUnavailableError(
            "token granularity needs the 'regex' package (pip install regex), or use word/phrase granularity"
        ) from exc
    return regex.compile(CLIP_PRETOKEN_PATTERN, regex.IGNORECASE)


def _load_open_clip_tokenizer_module() -> ModuleType:
    """Load ``open_clip/tokenizer.py`` on its own, without running ``open_clip/__init__.py``."""
    already = sys.modules.get("open_clip.tokenizer")
    if already is not None:
        return already
    loaded = sys.modules.get(_OPEN_CLIP_MODULE_NAME)
    if loaded is not None:
        return loaded
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((os.path.join(d, "tokenizer.py") for d in locations if os.path.isfile(os.path.join(d, "tokenizer.py"))), None)
    if path is None:
        raise TokenizerUnavailableError(
            "token granularity needs the CLIP tokenizer from open_clip_torch "
            "(pip install open_clip_torch), or choose word or phrase granularity"
        )
    module_spec = importlib.util.spec_from_file_location(_OPEN_CLIP_MODULE_NAME, path)
    if module_spec is None or module_spec.loader is None:  # pragma: no cover - a plain .py file always has a loader
        raise TokenizerUnavailableError(f"cannot load the CLIP tokenizer from {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[_OPEN_CLIP_MODULE_NAME] = module
    try:
        module_spec.loader.exec_module(module)
    except ImportError as exc:
        del sys.modules[_OPEN_CLIP_MODULE_NAME]
        raise TokenizerUnavailableError(
            f"the CLIP tokenizer in {path} needs a package that is missing ({exc}); "
            "install open_clip_torch with its dependencies (ftfy, regex)"
        ) from exc
    except Exception:
        del sys.modules[_OPEN_CLIP_MODULE_NAME]
        raise
    logger.debug("loaded the CLIP tokenizer from %s", path)
    return module


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> EncodingTokenizer:
    """open_clip's ``SimpleTokenizer`` (OpenAI CLIP BPE, the vocabulary of every SD text encoder).

    Loaded once per process; raises :class:`TokenizerUnavailableError` when open_clip_torch or one
    of its tokenizer dependencies is not installed.
    """
    module = _load_open_clip_tokenizer_module()
    # The module builds a SimpleTokenizer at import (open_clip's own default); reuse it.
    simple = getattr(module, "_tokenizer", None)
    if simple is None:
        simple = module.SimpleTokenizer()
    # SimpleTokenizer.pat is exactly its pre-tokenizer (CLIP's regex plus its special tokens).
    return EncodingTokenizer(simple.encode, pattern=simple.pat, name="open_clip SimpleTokenizer")


def adapt_tokenizer(tokenizer: object) -> Tokenizer:
    """Wrap a caller's tokenizer as a :class:`Tokenizer`.

    Accepted, in this order:

    * an object that already has ``pretoken_spans`` and ``count_tokens`` (returned unchanged);
    * a Hugging Face tokenizer (has ``get_vocab`` and is callable): encoded the way the WebUI does
      it, ``tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]``;
    * an object with ``encode(text) -> ids`` that adds no start/end tokens (open_clip's
      ``SimpleTokenizer``);
    * a callable ``text -> ids``.

    Pre-tokens come from :data:`CLIP_PRETOKEN_PATTERN`, checked against the encoder.
    """
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    name = type(tokenizer).__name__
    if hasattr(tokenizer, "get_vocab") and callable(tokenizer):
        hf: Any = tokenizer

        def encode(text: str) -> Sequence[int]:
            return hf(text, add_special_tokens=False, truncation=False)["input_ids"]

        return EncodingTokenizer(encode, name=name)
    encode_method = getattr(tokenizer, "encode", None)
    if callable(encode_method):
        return EncodingTokenizer(encode_method, name=name)
    if callable(tokenizer):
        return EncodingTokenizer(tokenizer, name=name)  # type: ignore[arg-type]
    raise TypeError(
        f"cannot use {name} as a tokenizer: expected a Hugging Face tokenizer, an object with "
        "encode(text) -> ids, or a callable text -> ids"
    )
