"""The result of the structured parse: :class:`Piece`, :class:`Unit` and :class:`ParsedPrompt`
(see the package docstring, :mod:`lib_pinning.prompt`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from lib_pinning.prompt.syntax import GRANULARITIES, PromptSide

PIECE_KINDS = ("text", "edit", "break", "network", "and", "tail")


@dataclasses.dataclass(frozen=True)
class Piece:
    """One piece of a parsed prompt, in prompt order.

    Attributes:
        kind: ``text`` (literal text, weighted when ``unit`` is set, else fixed), ``edit`` (prompt
            editing or alternation, verbatim source), ``break`` (a ``BREAK`` with the whitespace it
            absorbs), ``network`` (an extra network ``<name:args>``), ``and`` (the ``AND`` keyword),
            ``tail`` (what follows the text of an ``AND`` part: its ``:weight`` and trailing space).
        text: the literal text for ``text`` pieces (escapes resolved), else the verbatim source.
        factors: the emphasis multipliers applied to the piece, in the order the WebUI applies them
            (innermost closed bracket first, unclosed brackets last). Empty for network/and/tail.
        unit: index of the unit within its prompt, for weighted text.
    """

    kind: str
    text: str
    factors: tuple[float, ...] = ()
    unit: int | None = None

    @property
    def base_weight(self) -> float:
        """The weight the WebUI gives this piece in the original prompt."""
        return _product(self.factors)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A weighted unit, as shown in reports.

    Attributes:
        index: position in the search vector ``x`` (positive units first, then negative).
        prompt: which prompt it belongs to.
        text: its text as written (fixed pieces inside a phrase shown verbatim).
        base_weights: the distinct base weights of its pieces, in order.
    """

    index: int
    prompt: PromptSide
    text: str
    base_weights: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split into pieces; units are numbered 0.. in order of appearance."""

    source: str
    negative: bool
    granularity: str
    pieces: tuple[Piece, ...]

    @property
    def unit_count(self) -> int:
        units = [p.unit for p in self.pieces if p.unit is not None]
        return max(units) + 1 if units else 0

    def unit_labels(self) -> list[tuple[str, tuple[float, ...]]]:
        """``(text, base_weights)`` per unit."""
        labels = []
        for unit in range(self.unit_count):
            indices = [k for k, p in enumerate(self.pieces) if p.unit == unit]
            span = self.pieces[indices[0] : indices[-1] + 1]
            text = "".join(p.text for p in span if p.kind in ("text", "edit"))
            weights: list[float] = []
            for k in indices:
                weight = self.pieces[k].base_weight
                if not weights or weights[-1] != weight:
                    weights.append(weight)
            labels.append((text, tuple(weights)))
        return labels

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "negative": self.negative,
            "granularity": self.granularity,
            "pieces": [
                {"kind": p.kind, "text": p.text, "factors": list(p.factors), "unit": p.unit} for p in self.pieces
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParsedPrompt:
        try:
            pieces = tuple(
                Piece(
                    kind=str(p["kind"]),
                    text=str(p["text"]),
                    factors=tuple(float(f) for f in p.get("factors", ())),
                    unit=None if p.get("unit") is None else int(p["unit"]),
                )
                for p in data["pieces"]
            )
            parsed = cls(
                source=str(data["source"]),
                negative=bool(data["negative"]),
                granularity=str(data["granularity"]),
                pieces=pieces,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed prompt parse in JSON: {exc}") from exc
        parsed._validate()
        return parsed

    def _validate(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {self.granularity!r}")
        seen = -1
        for piece in self.pieces:
            if piece.kind not in PIECE_KINDS:
                raise ValueError(f"unknown piece kind {piece.kind!r}")
            if piece.unit is not None:
                if piece.kind != "text" or piece.unit > seen + 1 or piece.unit < 0:
                    raise ValueError("units must be text pieces numbered in order of appearance")
                seen = max(seen, piece.unit)
            if not all(math.isfinite(f) for f in piece.factors):
                raise ValueError("emphasis factors must be finite")


def _product(factors: Iterable[float], start: float = 1.0) -> float:
    # Same order of float multiplications as the WebUI's multiply_range.
    value = start
    for factor in factors:
        value *= factor
    return value
