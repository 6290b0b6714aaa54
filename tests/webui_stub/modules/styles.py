"""Stand-in for modules/styles.py (v1.10.1 82a973c0): prompt styles.

The stand-in's database holds the styles a test adds (`styles[name] = PromptStyle(...)`); by
default it is empty. Applying styles follows the WebUI: a style prompt with "{prompt}" wraps the
prompt, otherwise it is appended after ", "; unknown style names are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class PromptStyle(NamedTuple):
    """modules/styles.py:L10."""

    name: str
    prompt: str | None
    negative_prompt: str | None
    path: str | None = None


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """modules/styles.py:L17."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    parts = filter(None, (prompt.strip(), style_prompt.strip()))
    return ", ".join(parts)


def apply_styles_to_prompt(prompt: str, styles: Sequence[str]) -> str:
    """modules/styles.py:L27: `styles` are style prompts, applied in order."""
    for style in styles:
        prompt = merge_prompts(style, prompt)
    return prompt


class StyleDatabase:
    """modules/styles.py:L82: the styles by name."""

    def __init__(self) -> None:
        self.styles: dict[str, PromptStyle] = {}

    def apply_styles_to_prompt(self, prompt: str, styles: Sequence[str]) -> str:
        """modules/styles.py:L175."""
        return apply_styles_to_prompt(prompt, [self.styles.get(x, PromptStyle(x, "", "")).prompt or "" for x in styles])

    def apply_negative_styles_to_prompt(self, prompt: str, styles: Sequence[str]) -> str:
        """modules/styles.py:L180."""
        return apply_styles_to_prompt(prompt, [self.styles.get(x, PromptStyle(x, "", "")).negative_prompt or "" for x in styles])
