"""Names shared by the prompt modules: granularities, constants, the WebUI's lexical rules and
:class:`PromptSyntaxError` (see the package docstring, :mod:`lib_pinning.prompt`)."""

from __future__ import annotations

import re
from typing import Literal, get_args

Granularity = Literal["token", "word", "phrase"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
PromptSide = Literal["positive", "negative"]

#: Decimals of a rendered (optimised) weight.
WEIGHT_DECIMALS = 3
#: Starts a rendered part so that the WebUI's prompt-editing grammar rejects it at once instead of
#: parsing it for seconds (see the package docstring); invisible to emphasis and to the tokenizer.
SCHEDULE_GUARD = "\\\n"
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# The WebUI's lexical rules, restated (see the package docstring for where each applies).
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_AND = re.compile(r"\bAND\b")
_AND_WEIGHT = re.compile(r"(.*?)(\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*\Z", re.S)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_EMPHASIS_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_SCHEDULE_NUMBER = re.compile(r"\s*[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+)\s*\Z")
_WEIGHT_LIKE_END = re.compile(r":\s*[+-]?[.\d]+\s*\Z")
_AND_WEIGHT_END = re.compile(r":\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*\Z")
_EMPHASIS_SPECIAL = "\\()[]:"
_ESCAPED = "\\()[]"
_STRAY_NUMBER_CHARS = re.compile(r"[\s\d.+-]")
_MAX_NESTING = 200
_WORD_CHAR = re.compile(r"\w")


class PromptSyntaxError(ValueError):
    """A prompt that cannot be parsed, or not represented faithfully as weighted units.

    ``position`` is a 0-based character index into ``prompt`` (None when not about one place).
    """

    def __init__(self, reason: str, prompt: str = "", position: int | None = None) -> None:
        self.reason = reason
        self.prompt = prompt
        self.position = position
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.position is None or not self.prompt:
            return self.reason
        start = max(0, self.position - 20)
        end = min(len(self.prompt), self.position + 20)
        excerpt = ("..." if start else "") + self.prompt[start:end] + ("..." if end < len(self.prompt) else "")
        return f"{self.reason} (at character {self.position + 1}: {excerpt!r})"
