"""Typed option models: frozen dataclasses whose fields each carry an `OptionSpec`.

An `OptionSpec` holds an option's default, allowed range or choices, UI label, help text, UI group,
infotext key and extra CLI flag names; `OptionsModel` builds the specs from the fields' types and
metadata and gives every model the same coercion, validation, JSON, positional (the WebUI's script
args) and infotext round trips. lib_pinning.options defines the pinning options with it, the remote
backend its generation settings, the toy backend its settings.

Plain frozen dataclasses rather than pydantic on purpose: the WebUI pins pydantic 1 (gradio 3.41)
while Forge ships pydantic 2, and the extension must import under both.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union


class PinningInputError(ValueError):
    """Input a run cannot use (an option, a file, a combination), found before anything is generated;
    the message names the input and says what to change. Front ends show it as it is: the CLI exits
    with status 2, the WebUI API answers HTTP 422."""


class OptionError(PinningInputError):
    """An option value outside what the option allows; the message names the option."""

    def __init__(self, key: str, label: str, message: str) -> None:
        super().__init__(f"{label} ({key}): {message}")
        self.key = key
        self.label = label


@dataclass(frozen=True)
class OptionSpec:
    """Everything a front end needs to show, record and check one option."""

    key: str
    label: str
    help: str
    infotext: str | None
    group: str
    kind: str  # "int", "float", "bool", "choice", "text", "paths"
    default: Any
    optional: bool = False  # None is allowed and means "automatic" (see help)
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    # Other names the CLI accepts for the option (key style: "booru_tags" is --booru-tags), for the
    # names users know from elsewhere; the key stays the one name in infotext, JSON and the API.
    cli_aliases: tuple[str, ...] = ()

    def range_text(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false (also yes/no, on/off, 1/0)"
        if self.kind == "text":
            return "any text"
        if self.kind == "paths":
            return "file paths"
        if self.minimum is None and self.maximum is None:
            return "any value"
        lo = "-inf" if self.minimum is None else _fmt(self.minimum)
        hi = "inf" if self.maximum is None else _fmt(self.maximum)
        auto = " (or empty for automatic)" if self.optional else ""
        return f"a{'n integer' if self.kind == 'int' else ' number'} in [{lo}, {hi}]{auto}"

    def coerce(self, value: Any) -> Any:
        """Turn a raw value (a UI component's, a CLI string, a JSON value) into the option's type."""
        if self.optional and (value is None or (isinstance(value, str) and value.strip() == "")):
            return None
        try:
            if self.kind == "bool":
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered in ("true", "1", "yes", "on"):
                        return True
                    if lowered in ("false", "0", "no", "off"):
                        return False
                    raise ValueError(value)
                return bool(value)
            if self.kind == "int":
                number = float(value)
                if not number.is_integer():
                    raise ValueError(value)
                return int(number)
            if self.kind == "float":
                return float(value)
            if self.kind == "choice":
                text = str(value).strip()
                for choice in self.choices:
                    if choice.lower() == text.lower():
                        return choice
                raise ValueError(value)
            if self.kind == "paths":
                if value is None:
                    return ()
                if isinstance(value, str):
                    return tuple(p for p in (s.strip() for s in value.split("\n")) if p)
                return tuple(str(getattr(p, "name", p)) for p in value)
            return "" if value is None else str(value)
        except (TypeError, ValueError):
            raise OptionError(self.key, self.label, f"{value!r} is not {self.range_text()}") from None

    def check(self, value: Any) -> None:
        if value is None:
            if not self.optional:
                raise OptionError(self.key, self.label, f"a value is required: {self.range_text()}")
            return
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OptionError(self.key, self.label, f"{value!r} is not {self.range_text()}")
            if not math.isfinite(value):
                raise OptionError(self.key, self.label, f"{value!r} is not finite")
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise OptionError(self.key, self.label, f"{value!r} is not {self.range_text()}")
        elif self.kind == "choice" and value not in self.choices:
            raise OptionError(self.key, self.label, f"{value!r} is not {self.range_text()}")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def option(
    default: Any,
    *,
    label: str,
    help: str,
    infotext: str | None,
    group: str = "main",
    minimum: float | None = None,
    maximum: float | None = None,
    step: float | None = None,
    cli_aliases: tuple[str, ...] = (),
) -> Any:
    """Declare a dataclass field with its spec; the kind and choices come from the annotation."""
    return field(
        default=default,
        metadata={
            "option": dict(
                label=label,
                help=help,
                infotext=infotext,
                group=group,
                minimum=minimum,
                maximum=maximum,
                step=step,
                cli_aliases=cli_aliases,
            )
        },
    )


def _kind_of(annotation: Any) -> tuple[str, bool, tuple[str, ...]]:
    """Map a field annotation to (kind, optional, choices)."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) != len(typing.get_args(annotation))
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice", optional, tuple(str(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return "paths", optional, ()
    kinds = {bool: "bool", int: "int", float: "float", str: "text"}
    if annotation not in kinds:
        raise TypeError(f"unsupported option annotation {annotation!r}")
    return kinds[annotation], optional, ()


class OptionsModel:
    """Mixin for frozen dataclasses whose fields are declared with `option()`."""

    @classmethod
    def specs(cls) -> tuple[OptionSpec, ...]:
        cached = cls.__dict__.get("_specs_cache")
        if cached is not None:
            return cached
        hints = typing.get_type_hints(cls)
        result = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            meta = f.metadata.get("option")
            if meta is None:
                continue
            kind, optional, choices = _kind_of(hints[f.name])
            result.append(
                OptionSpec(
                    key=f.name, kind=kind, optional=optional, choices=choices, default=f.default, **meta
                )
            )
        specs = tuple(result)
        setattr(cls, "_specs_cache", specs)
        return specs

    @classmethod
    def spec(cls, key: str) -> OptionSpec:
        for s in cls.specs():
            if s.key == key:
                return s
        raise KeyError(key)

    def __post_init__(self) -> None:
        for s in self.specs():
            s.check(getattr(self, s.key))
        self._check_combination()

    def _check_combination(self) -> None:
        """Constraints between options; subclasses override."""

    @classmethod
    def from_values(cls, values: Mapping[str, Any]):
        """Build from raw values (UI, CLI, JSON): coerces each, rejects unknown keys."""
        known = {s.key: s for s in cls.specs()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(known)}"
            )
        return cls(**{k: known[k].coerce(v) for k, v in values.items()})

    @classmethod
    def from_positional(cls, args: typing.Sequence[Any]):
        """Build from UI component values given in `specs()` order (the WebUI passes script args so)."""
        specs = cls.specs()
        if len(args) != len(specs):
            raise ValueError(f"expected {len(specs)} option values, got {len(args)}")
        return cls.from_values({s.key: v for s, v in zip(specs, args)})

    def to_json(self) -> dict[str, Any]:
        out = {}
        for s in self.specs():
            value = getattr(self, s.key)
            out[s.key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):
        known = {s.key for s in cls.specs()}
        return cls.from_values({k: v for k, v in data.items() if k in known})

    def to_infotext(self, *, only_changed: bool = True) -> dict[str, str]:
        """Infotext entries ("key: value" pairs of the PNG info); defaults are left out."""
        out = {}
        for s in self.specs():
            value = getattr(self, s.key)
            if s.infotext is None or (only_changed and value == s.default):
                continue
            out[s.infotext] = "" if value is None else str(value)
        return out

    @classmethod
    def from_infotext(cls, params: Mapping[str, str]):
        values = {s.key: params[s.infotext] for s in cls.specs() if s.infotext and s.infotext in params}
        return cls.from_values(values)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
