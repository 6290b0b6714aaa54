"""The search space: positive and negative prompt as one vector of unit offsets (see the package
docstring, :mod:`lib_pinning.prompt`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lib_pinning.bounds import DEFAULT_WEIGHT_RANGE, WeightRange
from lib_pinning.prompt.parser import parse_prompt
from lib_pinning.prompt.pieces import ParsedPrompt, Piece, Unit
from lib_pinning.prompt.render import effective_weights, render_prompt
from lib_pinning.prompt.syntax import Granularity, PromptSyntaxError
from lib_pinning.tokenizer import default_tokenizer

logger = logging.getLogger(__name__)

JSON_FORMAT = 1


class PromptSpace:
    """Positive and negative prompt as one search space: ``x`` has :attr:`dim` entries, the
    positive prompt's units first.

    Args:
        prompt: the positive prompt.
        negative_prompt: the negative prompt ("" gives no units).
        granularity: ``token``, ``word`` or ``phrase``.
        tokenizer: used by ``token`` granularity only (see :func:`parse_prompt`).
        weight_range: the range every changed weight is reflected into.
        schedule_guard: start rendered parts with :data:`SCHEDULE_GUARD` where that spares the
            WebUI's prompt-editing parser (see the package docstring).

    Raises:
        PromptSyntaxError: a prompt cannot be represented, or neither prompt has a weightable unit.
    """

    def __init__(
        self,
        prompt: str,
        negative_prompt: str = "",
        granularity: Granularity = "word",
        tokenizer: object | None = None,
        *,
        weight_range: WeightRange = DEFAULT_WEIGHT_RANGE,
        schedule_guard: bool = True,
    ) -> None:
        if granularity == "token" and tokenizer is None:
            tokenizer = default_tokenizer()
        positive = parse_prompt(prompt, granularity, negative=False, tokenizer=tokenizer)
        negative = parse_prompt(negative_prompt, granularity, negative=True, tokenizer=tokenizer)
        self._init(positive, negative, weight_range, schedule_guard)

    def _init(self, positive: ParsedPrompt, negative: ParsedPrompt, weight_range: WeightRange, schedule_guard: bool) -> None:
        self.positive = positive
        self.negative = negative
        self.weight_range = weight_range
        self.schedule_guard = schedule_guard
        for parsed in (positive, negative):
            for text in _edited_parts_with_many_units(parsed):
                logger.warning(
                    "%r uses prompt editing and has many weighted units: the WebUI parses such a part "
                    "for seconds per individual (its cost grows with the cube of the emphasis groups); "
                    "phrase granularity, or prompt editing in a separate AND part, keeps it fast",
                    text[:60] + ("..." if len(text) > 60 else ""),
                )
        self.granularity = positive.granularity
        if positive.unit_count + negative.unit_count == 0:
            raise PromptSyntaxError(
                f"nothing to weight: neither the prompt {positive.source!r} nor the negative prompt "
                f"{negative.source!r} has text outside prompt editing, extra networks and BREAK"
            )
        units = []
        for side, parsed, first in (("positive", positive, 0), ("negative", negative, positive.unit_count)):
            for k, (text, weights) in enumerate(parsed.unit_labels()):
                units.append(Unit(first + k, side, text, weights))  # type: ignore[arg-type]
        self.units: tuple[Unit, ...] = tuple(units)

    @property
    def dim(self) -> int:
        """Length of the search vector."""
        return len(self.units)

    def _split(self, x: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vector = np.asarray(x, dtype=float).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(f"x has {vector.shape[0]} entries, the prompt space has {self.dim}")
        if not np.all(np.isfinite(vector)):
            raise ValueError("x must be finite")
        n = self.positive.unit_count
        return vector[:n], vector[n:]

    def render(self, x: Sequence[float] | np.ndarray) -> tuple[str, str]:
        """``(prompt, negative_prompt)`` in emphasis syntax for the search vector ``x``."""
        pos, neg = self._split(x)
        options = {"weight_range": self.weight_range, "guard": self.schedule_guard}
        return render_prompt(self.positive, pos, **options), render_prompt(self.negative, neg, **options)

    def display(self, x: Sequence[float] | np.ndarray) -> tuple[str, str]:
        """:meth:`render` without the schedule guard: the prompts to show a person and to copy.

        The guard only spares the WebUI's parser time; it reads as a stray backslash and line
        break in a prompt box, and the weights and tokens are the same without it.
        """
        pos, neg = self._split(x)
        return (render_prompt(self.positive, pos, weight_range=self.weight_range),
                render_prompt(self.negative, neg, weight_range=self.weight_range))

    def weights(self, x: Sequence[float] | np.ndarray) -> list[tuple[float, ...]]:
        """Per unit, the weights the rendered prompts really use (rounded where changed)."""
        pos, neg = self._split(x)
        return effective_weights(self.positive, pos, self.weight_range) + effective_weights(
            self.negative, neg, self.weight_range
        )

    def to_json(self) -> dict[str, Any]:
        """The parse, for run.json; :meth:`from_json` restores it without re-parsing."""
        return {
            "format": JSON_FORMAT,
            "granularity": self.granularity,
            "prompt": self.positive.to_json(),
            "negative_prompt": self.negative.to_json(),
            "units": [dataclasses.asdict(u) for u in self.units],
            "weight_range": self.weight_range.to_json(),
            "schedule_guard": self.schedule_guard,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptSpace:
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise ValueError(f"unsupported prompt space format: {data.get('format') if isinstance(data, dict) else data!r}")
        positive = ParsedPrompt.from_json(data["prompt"])
        negative = ParsedPrompt.from_json(data["negative_prompt"])
        if positive.negative or not negative.negative:
            raise ValueError("prompt and negative_prompt are swapped in the JSON")
        space = cls.__new__(cls)
        # Runs recorded before these keys existed rendered |base + x| with no guard: keep that.
        weight_range = WeightRange.from_json(data.get("weight_range"))
        space._init(positive, negative, weight_range, bool(data.get("schedule_guard", False)))
        return space

    def __repr__(self) -> str:
        return (
            f"PromptSpace(dim={self.dim}, granularity={self.granularity!r}, prompt={self.positive.source!r}, "
            f"negative_prompt={self.negative.source!r}, weight_range=[{self.weight_range.low:g}, {self.weight_range.high:g}])"
        )


#: Weighted units in one AND part with prompt editing above which the WebUI's parse takes seconds.
SLOW_EDITED_PART_UNITS = 20


def _edited_parts_with_many_units(parsed: ParsedPrompt) -> list[str]:
    """The text of each AND part that has prompt editing (so no guard) and many units."""
    found: list[str] = []
    units: set[int] = set()
    edited = False
    text = ""
    for piece in (*parsed.pieces, Piece("and", "")):
        if piece.kind == "and":
            if edited and len(units) > SLOW_EDITED_PART_UNITS:
                found.append(text)
            units, edited, text = set(), False, ""
            continue
        edited = edited or piece.kind == "edit"
        text += piece.text
        if piece.unit is not None:
            units.add(piece.unit)
    return found
