"""The `Processed` a pinning run returns to the WebUI: best batch first, then the baseline batch.

What the WebUI does with it (modules/txt2img.py:L102-L120 in v1.10.1): the gallery shows
`images`; the info box shows `info` and, when an image is clicked, `infotexts[i]`; the log box
below shows `comments`; `js()` (all_prompts, all_seeds, infotexts, ...) travels as the
generation info that "Save" writes into the saved PNGs. Both boxes are escaped plain text
(modules/ui_common.py:L32 `plaintext_to_html`), so the report link is written as text
("Pinning report: file=...") and javascript/prompt_pinning_report_link.js turns it into a link.

Infotexts. Each image keeps the WebUI's own infotext of its generation (the pinned prompt, Steps,
Sampler, Seed, Model, ...), which already carries "Pin run" and the changed options (the generator
adds them to every individual's extra_generation_params). Its prompts are told without the schedule
guard the generated ones start with (PromptSpace.display: the same weights and tokens), so that
pasting fills clean prompt boxes. Added entries:

    Pin image: best | baseline      which batch the image belongs to
    Pin fitness, Pin baseline fitness
    Pin status                      only when the run did not finish
    Script: Prompt pinning          baseline images only

Pasting a baseline image's infotext therefore restores the original prompt, the options and the
script (the WebUI selects the script named by "Script", modules/scripts.py:L761): a rerun. Pasting
a best image's restores the pinned prompt for ordinary generation, as the X/Y/Z plot marks only
its grid with "Script" (scripts/xyz_grid.py:L738). `params.txt` (what the paste button reads when
the prompt box is empty, modules/infotext_utils.py:L478-L482) is rewritten with the first best
image's infotext, because each individual's `process_images` overwrote it.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from lib_pinning import guard
from lib_pinning.analysis import influence
from lib_pinning.sweep_stage import DONE, summary_lines
from lib_pinning.run import RunResult
from lib_pinning.store import IndividualRecord, RunDirectoryError, RunStore, read_json, to_uint8_image
from lib_pinning.webui import TITLE

log = logging.getLogger(__name__)

REPORT_PREFIX = "Pinning report: "
"""Starts the comments line with the report's URL; the report-link script looks for it."""


def quote(value: Any) -> str:
    """An infotext value, quoted as the WebUI quotes it (infotext_utils.quote, L56 in v1.10.1)."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def with_params(infotext: str, params: dict[str, Any]) -> str:
    """`infotext` with "key: value" entries appended to its parameters line (its last line)."""
    extra = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    if not extra:
        return infotext
    lines = infotext.rstrip("\n").split("\n")
    if len(lines) > 1 and ": " in lines[-1]:
        lines[-1] = f"{lines[-1]}, {extra}"
    else:
        lines.append(extra)
    return "\n".join(lines)


def _prompt_head(prompt: str, negative: str) -> str:
    """How an infotext starts (modules/processing.py create_infotext: the prompt, the negative
    prompt's line when there is one, then the parameters line)."""
    return prompt + (f"\nNegative prompt: {negative}" if negative else "") + "\n"


def with_shown_prompts(infotext: str, generated: tuple[str, str], shown: tuple[str, str]) -> str:
    """`infotext` of a batch generated with the prompts `generated`, telling the `shown` ones instead
    (the same weights without the schedule guard), so that pasting it fills clean prompt boxes.
    An infotext that does not start with the generated prompts is left as it is."""
    head = _prompt_head(*generated)
    if generated == shown or not infotext.startswith(head):
        return infotext
    return _prompt_head(*shown) + infotext[len(head):]


def fallback_infotext(prompts: tuple[str, str], seed: int, params: dict[str, Any]) -> str:
    """An infotext for an image whose WebUI infotext is not at hand (an individual of another run)."""
    return with_params(f"{_prompt_head(*prompts)}Seed: {seed}", params)


def images_of(store: RunStore, record: IndividualRecord) -> list[Any]:
    """The record's batch as PIL images, read back from the run directory (what was scored)."""
    from PIL import Image

    return [Image.fromarray(to_uint8_image(t)) for t in store.load_batch_images(record)]


def build_processed(
    processing: Any,
    p: Any,
    result: RunResult,
    *,
    infotexts_for: Any,
    run_params: dict[str, Any],
    comments: Sequence[str],
    enable_pnginfo: bool = True,
) -> Any:
    """The result Processed (see the module docstring).

    processing: modules.processing; p: the user's processing object (copied, not changed);
    infotexts_for(prompt, negative, seeds) -> the WebUI infotexts of a batch or None;
    run_params: infotext entries every result image gets (run id, options); comments: lines for
    the log box.
    """
    store = RunStore(result.run_dir)
    best, baseline = result.best, result.baseline
    comments = [*comments[:1], *stop_lines(result), *comments[1:]]
    comments = [*comments[:1], *guard_lines(result), *comments[1:]]
    comments = [*comments[:1], *report_lines(result), *comments[1:]]
    comments = [*comments[:1], *influence_lines(result), *comments[1:]]
    seeds = [int(s) for s in best.seeds]
    status = None if result.status == "finished" else result.status
    entries: list[tuple[IndividualRecord, dict[str, Any]]] = [
        (best, {"Pin image": "best", "Pin fitness": _fmt(best.fitness[0]),
                "Pin baseline fitness": _fmt(baseline.fitness[0]) if baseline.fitness else None, "Pin status": status}),
        (baseline, {"Pin image": "baseline", "Pin fitness": _fmt(baseline.fitness[0]) if baseline.fitness else None,
                    "Pin status": status, "Script": TITLE}),
    ]
    images: list[Any] = []
    infotexts: list[str] = []
    prompts: list[str] = []
    negatives: list[str] = []
    all_seeds: list[int] = []
    for record, extra in entries:
        batch = images_of(store, record)
        shown_prompts = result.shown(record)
        known = infotexts_for(record.prompt, record.negative_prompt, tuple(record.seeds))
        for i, image in enumerate(batch):
            seed = int(record.seeds[i])
            if known is not None and i < len(known):
                # The WebUI wrote run_params itself (the generator's extra_generation_params).
                generated = (record.prompt, record.negative_prompt)
                text = with_params(with_shown_prompts(known[i], generated, shown_prompts), extra)
            else:
                text = fallback_infotext(shown_prompts, seed, {**run_params, **extra})
            if enable_pnginfo:
                image.info["parameters"] = text
            images.append(image)
            infotexts.append(text)
            prompts.append(shown_prompts[0])
            negatives.append(shown_prompts[1])
            all_seeds.append(seed)
    shown = copy.copy(p)
    shown.prompt, shown.negative_prompt = result.shown(best)
    shown.batch_size = len(seeds)
    shown.n_iter = 1
    shown.comments = {**dict(getattr(p, "comments", None) or {}), **dict.fromkeys(comments, 1)}
    shown.extra_generation_params = dict(getattr(p, "extra_generation_params", None) or {})
    subseed = int(p.subseed) if isinstance(p.subseed, int) else -1
    return processing.Processed(
        shown,
        images,
        seed=seeds[0],
        info=infotexts[0] if infotexts else "",
        subseed=subseed,
        all_prompts=prompts,
        all_negative_prompts=negatives,
        all_seeds=all_seeds,
        all_subseeds=[subseed + i for i in range(len(seeds))] * len(entries),
        index_of_first_image=0,
        infotexts=infotexts,
    )


def stop_lines(result: RunResult) -> list[str]:
    """Why the run ended and what it cost, for the log box under the gallery."""
    lines = [result.stop_reason] if result.stop_reason else []
    if result.repeats:
        lines.append(f"{result.batches} batches generated; {result.repeats} individual(s) repeated an "
                     "already generated prompt and reused its batch.")
    return lines


def report_lines(result: RunResult) -> list[str]:
    """Why the report is missing or incomplete, when its final refresh failed: without this line
    the result would just lack the report link."""
    if not result.report_error:
        return []
    return [
        f"The run's report could not be written ({result.report_error}); the run itself is complete. "
        f"Rebuild the report with: python -m lib_pinning report \"{result.run_dir}\""
    ]


def influence_lines(result: RunResult) -> list[str]:
    """The three tightest and loosest units (the sensitivity sweep's when the run has one, else
    lib_pinning.analysis.influence's), from the influence.json the final report wrote (nothing when
    there is none: the report failed), and what became of a sweep that was asked for and not done."""
    path = Path(result.run_dir) / influence.INFLUENCE_FILE
    try:
        data = read_json(path) if path.is_file() else None
    except RunDirectoryError:
        return []
    swept_outcome = getattr(result, "sweep", None)  # a RunResult; callers with only run_dir get no sweep line
    lines = [swept_outcome.message] if swept_outcome is not None and swept_outcome.status != DONE else []
    if not isinstance(data, dict):
        return lines
    # As summary_lines decides: a sweep whose budget measured no unit leaves the surrogate's summary.
    swept = isinstance(data.get("sweep"), dict) and any(
        isinstance(u, dict) and u.get("slope") is not None for u in data["sweep"].get("units") or [])
    source = "measured by the sensitivity sweep" if swept else "from the run's own evaluations"
    return [f"Per-unit influence (loss change per weight step, {source}): " + " · ".join(summary_lines(data)), *lines]


def guard_lines(result: RunResult) -> list[str]:
    """What the degenerate-image guard found, for the log box: generations that were mostly broken
    images, and a best batch that is (the guard off, or no clean batch at all)."""
    lines = []
    penalised = bool((result.best.guard or {}).get("penalised"))
    if result.degenerate_generations:
        listed = ", ".join(str(g) for g in result.degenerate_generations)
        lines.append(
            f"Most images were degenerate (black/NaN, flat or fried) in generation(s) {listed}: the search "
            "ran into the model's failure region (over-emphasis). "
            + ("They were penalised and never chosen as the best." if penalised
               else "The degenerate-image guard was off: they were scored like any batch.")
        )
    if result.best.degenerate:
        counts = guard.summarize_reasons(result.best.degenerate_reasons)
        what = guard.describe(counts, len(result.best.degenerate_reasons))
        lines.append(
            f"The best batch has degenerate images ({what})"
            + (": no clean batch was found, so the prompt as written is shown." if penalised else ".")
        )
    return lines


def empty_processed(processing: Any, p: Any, comments: Sequence[str]) -> Any:
    """A Processed without images (the run stopped before its baseline batch was done)."""
    shown = copy.copy(p)
    shown.comments = {**dict(getattr(p, "comments", None) or {}), **dict.fromkeys(comments, 1)}
    text = "\n".join(comments)
    return processing.Processed(shown, [], seed=p.seed if isinstance(p.seed, int) else -1, info=text, infotexts=[])


def write_params_txt(data_path: str, infotext: str) -> None:
    """What the paste button reads when the prompt box is empty (see the module docstring)."""
    try:
        (Path(data_path) / "params.txt").write_text(infotext, encoding="utf8")
    except OSError as e:
        log.warning("could not write params.txt: %s", e)


def _fmt(value: float) -> str:
    return f"{value:.6g}"
