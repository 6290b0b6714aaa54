"""Stand-in for modules/prompt_parser.py (v1.10.1 82a973c0): prompt editing, AND, and the cond structures.

What the samplers see comes from here: `get_learned_conditioning` turns each negative prompt into
a schedule (a list of ScheduledPromptConditioning, one per prompt-editing segment);
`get_multicond_learned_conditioning` splits each prompt at AND into weighted sub-prompts, each
with its own schedule, inside a MulticondLearnedConditioning; the CFG denoiser rebuilds the
per-step batch with `reconstruct_cond_batch` / `reconstruct_multicond_batch`. These structures
and functions follow the WebUI exactly.

Prompt editing ([from:to:when], [to:when], [from::when], [a|b] alternation) is parsed by a small
recursive-descent parser instead of the WebUI's lark grammar (lark is not a dependency here). It
reproduces the grammar's results on the WebUI's own doctest cases (tests/test_webui_stub.py runs
them), including its tolerance of stray brackets and colons at the top level; a prompt the
grammar rejects (such as a top-level "|") is returned unscheduled, as the WebUI does on a parse
error. `parse_prompt_attention` is the WebUI's emphasis parser (same regex and rules).
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch

# -- prompt editing: the schedule grammar -------------------------------------------------------
#
# The WebUI's lark grammar (modules/prompt_parser.py:L15 `schedule_parser = lark.Lark`):
#   !start: (prompt | /[][():]/+)*
#   prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
#   !emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
#   scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
#   alternate: "[" prompt ("|" [prompt])+ "]"
#   plain: /([^\\\[\]():|]|\\.)+/
#   NUMBER: common.SIGNED_NUMBER

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")


@dataclass
class _Scheduled:
    before: list[Any] | None
    after: list[Any]
    number: str
    when: int = 0


@dataclass
class _Alternate:
    options: list[list[Any]]


_Node = Union[str, _Scheduled, _Alternate, list]


class _ParseError(Exception):
    pass


def _parse_prompt(text: str, i: int) -> tuple[list[_Node], int]:
    """The grammar's `prompt`: a run of plain text, emphasis, scheduling and alternation.

    Stops (without consuming) at ":", "|", ")" and "]" and at a bracket that opens no valid
    construct, so the caller decides whether that character belongs to it.
    """
    nodes: list[_Node] = []
    while i < len(text):
        m = _PLAIN.match(text, i)
        if m:
            nodes.append(m.group(0))
            i = m.end()
            continue
        if text[i] in "([":
            parsed = _parse_bracket(text, i)
            if parsed is None:
                break
            node, i = parsed
            nodes.append(node)
            continue
        break
    return nodes, i


def _parse_bracket(text: str, i: int) -> tuple[_Node, int] | None:
    """A construct opening at text[i] ("(" or "["), or None if none matches there."""
    if text[i] == "(":
        inner, j = _parse_prompt(text, i + 1)
        if j < len(text) and text[j] == ")":
            return ["(", inner, ")"], j + 1
        if j < len(text) and text[j] == ":":
            second, k = _parse_prompt(text, j + 1)
            if k < len(text) and text[k] == ")":
                return ["(", inner, ":", second, ")"], k + 1
        return None
    first, j = _parse_prompt(text, i + 1)
    if j >= len(text):
        return None
    if text[j] == ":":
        # [to:when]
        m = _NUMBER.match(text, j + 1)
        if m and m.end() < len(text) and text[m.end()] == "]":
            return _Scheduled(None, first, m.group(1)), m.end() + 1
        # [from:to:when]
        second, k = _parse_prompt(text, j + 1)
        if k < len(text) and text[k] == ":":
            m = _NUMBER.match(text, k + 1)
            if m and m.end() < len(text) and text[m.end()] == "]":
                return _Scheduled(first, second, m.group(1)), m.end() + 1
        return None
    if text[j] == "|":
        options = [first]
        while j < len(text) and text[j] == "|":
            option, j = _parse_prompt(text, j + 1)
            options.append(option)
        if j < len(text) and text[j] == "]":
            return _Alternate(options), j + 1
        return None
    if text[j] == "]":
        return ["[", first, "]"], j + 1
    return None


def _parse_start(text: str) -> list[_Node]:
    """The grammar's `start`: prompts, with stray "[", "]", "(", ")" and ":" kept as text."""
    nodes: list[_Node] = []
    i = 0
    while i < len(text):
        part, j = _parse_prompt(text, i)
        nodes.extend(part)
        if j < len(text):
            if text[j] not in "[]():":
                raise _ParseError(f"unexpected {text[j]!r} at {j}")
            nodes.append(text[j])
            j += 1
        i = j
    return nodes


def _walk(nodes: Sequence[_Node]) -> list[_Node]:
    found: list[_Node] = []
    for node in nodes:
        if isinstance(node, _Scheduled):
            found.append(node)
            found.extend(_walk(node.before or []))
            found.extend(_walk(node.after))
        elif isinstance(node, _Alternate):
            found.append(node)
            for option in node.options:
                found.extend(_walk(option))
        elif isinstance(node, list):
            found.extend(_walk(node))
    return found


def _text_at(nodes: Sequence[_Node], step: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            out.append(_text_at((node.before or []) if step <= node.when else node.after, step))
        elif isinstance(node, _Alternate):
            out.append(_text_at(node.options[(step - 1) % len(node.options)], step))
        else:
            out.append(_text_at(node, step))
    return "".join(out)


def get_learned_conditioning_prompt_schedules(prompts: Sequence[str], base_steps: int, hires_steps: int | None = None,
                                              use_old_scheduling: bool = False) -> list[list[list[Any]]]:
    """modules/prompt_parser.py:L28: each prompt's [[end_at_step, text], ...] schedule.

    "when" with a decimal point is a fraction of the steps (of the hires steps, 1..2, in the hires
    pass), otherwise a step number; `use_old_scheduling` restores the pre-1.6 rule (< 1 is a
    fraction). Alternation [a|b] switches every step.
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def get_schedule(prompt: str) -> list[list[Any]]:
        try:
            tree = _parse_start(prompt)
        except _ParseError:
            return [[steps, prompt]]
        res = {steps}
        for node in _walk(tree):
            if isinstance(node, _Scheduled):
                v = float(node.number)
                if use_old_scheduling:
                    v = v * steps if v < 1 else v
                elif "." in node.number:
                    v = (v - flt_offset) * steps
                else:
                    v = v - int_offset
                node.when = min(steps, int(v))
                if node.when >= 1:
                    res.add(node.when)
            else:
                res.update(range(1, steps + 1))
        return [[t, _text_at(tree, t)] for t in sorted(res)]

    promptdict = {prompt: get_schedule(prompt) for prompt in set(prompts)}
    return [promptdict[prompt] for prompt in prompts]


ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])
"""modules/prompt_parser.py:L136: one segment of a schedule: `cond` applies up to `end_at_step`."""


class SdConditioning(list):
    """modules/prompt_parser.py:L139: a list of prompts plus what SDXL's conditioner needs (size)."""

    def __init__(self, prompts: Sequence[str], is_negative_prompt: bool = False, width: int | None = None,
                 height: int | None = None, copy_from: Any = None) -> None:
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


def get_learned_conditioning(model: Any, prompts: SdConditioning | list[str], steps: int, hires_steps: int | None = None,
                             use_old_scheduling: bool = False) -> list[list[ScheduledPromptConditioning]]:
    """modules/prompt_parser.py:L157: one schedule (list of ScheduledPromptConditioning) per prompt.

    `model.get_learned_conditioning(texts)` encodes all segments of a prompt at once and returns
    a tensor [n, tokens, C] (SD 1.x/2.x) or a dict of such per-key tensors (SDXL); each segment's
    cond is its row (or a dict of its rows).
    """
    res = []
    prompt_schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    cache: dict[str, list[ScheduledPromptConditioning]] = {}
    for prompt, prompt_schedule in zip(prompts, prompt_schedules):
        cached = cache.get(prompt, None)
        if cached is not None:
            res.append(cached)
            continue
        texts = SdConditioning([x[1] for x in prompt_schedule], copy_from=prompts)
        conds = model.get_learned_conditioning(texts)
        cond_schedule = []
        for i, (end_at_step, _) in enumerate(prompt_schedule):
            if isinstance(conds, dict):
                cond = {k: v[i] for k, v in conds.items()}
            else:
                cond = conds[i]
            cond_schedule.append(ScheduledPromptConditioning(end_at_step, cond))
        cache[prompt] = cond_schedule
        res.append(cond_schedule)
    return res


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts: SdConditioning | list[str]) -> tuple[list[list[tuple[int, float]]], SdConditioning, dict[str, int]]:
    """modules/prompt_parser.py:L209: split prompts at AND into (sub-prompt index, weight) lists."""
    res_indexes = []
    prompt_indexes: dict[str, int] = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()
    for prompt in prompts:
        subprompts = re_AND.split(prompt)
        indexes = []
        for subprompt in subprompts:
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, 1.0)
            weight = float(weight) if weight is not None else 1.0
            index = prompt_indexes.get(text, None)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)
    return res_indexes, prompt_flat_list, prompt_indexes


class ComposableScheduledPromptConditioning:
    """modules/prompt_parser.py:L240: one AND-part of a prompt: its schedule and weight."""

    def __init__(self, schedules: list[ScheduledPromptConditioning], weight: float = 1.0) -> None:
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    """modules/prompt_parser.py:L246: the positive conds of a batch; `shape == (batch size,)`."""

    def __init__(self, shape: tuple[int, ...], batch: list[list[ComposableScheduledPromptConditioning]]) -> None:
        self.shape: tuple[int, ...] = shape
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(model: Any, prompts: SdConditioning | list[str], steps: int,
                                       hires_steps: int | None = None,
                                       use_old_scheduling: bool = False) -> MulticondLearnedConditioning:
    """modules/prompt_parser.py:L252: `get_learned_conditioning` for the AND-parts of every prompt."""
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned_conditioning = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    res = [[ComposableScheduledPromptConditioning(learned_conditioning[i], weight) for i, weight in indexes]
           for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=res)


class DictWithShape(dict):
    """modules/prompt_parser.py:L270: an SDXL cond batch; `.shape` is its crossattn's shape."""

    def __init__(self, x: dict[str, torch.Tensor], shape: Any = None) -> None:
        super().__init__()
        self.update(x)

    @property
    def shape(self) -> torch.Size:
        return self["crossattn"].shape


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step: int) -> torch.Tensor | DictWithShape:
    """modules/prompt_parser.py:L280: the batch's conds at `current_step` (one row per schedule)."""
    param = c[0][0].cond
    is_dict = isinstance(param, dict)
    if is_dict:
        dict_cond = param
        res: Any = {k: torch.zeros((len(c),) + v.shape, device=v.device, dtype=v.dtype) for k, v in dict_cond.items()}
        res = DictWithShape(res, (len(c),) + dict_cond["crossattn"].shape)
    else:
        res = torch.zeros((len(c),) + param.shape, device=param.device, dtype=param.dtype)
    for i, cond_schedule in enumerate(c):
        target_index = 0
        for current, entry in enumerate(cond_schedule):
            if current_step <= entry.end_at_step:
                target_index = current
                break
        if is_dict:
            for k, v in cond_schedule[target_index].cond.items():
                res[k][i] = v
        else:
            res[i] = cond_schedule[target_index].cond
    return res


def stack_conds(tensors: list[torch.Tensor]) -> torch.Tensor:
    """modules/prompt_parser.py:L307: stack, repeating the last token row of shorter conds."""
    token_count = max(x.shape[0] for x in tensors)
    for i in range(len(tensors)):
        if tensors[i].shape[0] != token_count:
            last_vector = tensors[i][-1:]
            last_vector_repeated = last_vector.repeat([token_count - tensors[i].shape[0], 1])
            tensors[i] = torch.vstack([tensors[i], last_vector_repeated])
    return torch.stack(tensors)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step: int) -> tuple[list[list[tuple[int, float]]], torch.Tensor | DictWithShape]:
    """modules/prompt_parser.py:L321: (conds_list, stacked conds) at `current_step`.

    conds_list[i] lists (row in the stacked tensor, weight) for each AND-part of image i.
    """
    param = c.batch[0][0].schedules[0].cond
    tensors = []
    conds_list = []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for composable_prompt in composable_prompts:
            target_index = 0
            for current, entry in enumerate(composable_prompt.schedules):
                if current_step <= entry.end_at_step:
                    target_index = current
                    break
            conds_for_batch.append((len(tensors), composable_prompt.weight))
            tensors.append(composable_prompt.schedules[target_index].cond)
        conds_list.append(conds_for_batch)
    if isinstance(tensors[0], dict):
        keys = list(tensors[0].keys())
        stacked: Any = {k: stack_conds([x[k] for x in tensors]) for k in keys}
        stacked = DictWithShape(stacked, stacked["crossattn"].shape)
    else:
        stacked = stack_conds(tensors).to(device=param.device, dtype=param.dtype)
    return conds_list, stacked


re_attention = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[list[Any]]:
    """modules/prompt_parser.py:L370: [[text, weight], ...] from the emphasis syntax.

    (abc) multiplies by 1.1, [abc] divides by 1.1, (abc:w) multiplies by w, backslash escapes,
    BREAK becomes ["BREAK", -1]; runs of equal weight are merged.
    """
    res: list[list[Any]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []
    round_bracket_multiplier = 1.1
    square_bracket_multiplier = 1 / 1.1

    def multiply_range(start_position: int, multiplier: float) -> None:
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        piece = m.group(0)
        weight = m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_brackets.append(len(res))
        elif piece == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif piece == ")" and round_brackets:
            multiply_range(round_brackets.pop(), round_bracket_multiplier)
        elif piece == "]" and square_brackets:
            multiply_range(square_brackets.pop(), square_bracket_multiplier)
        else:
            parts = re.split(re_break, piece)
            for i, part in enumerate(parts):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, round_bracket_multiplier)
    for pos in square_brackets:
        multiply_range(pos, square_bracket_multiplier)
    if len(res) == 0:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res
