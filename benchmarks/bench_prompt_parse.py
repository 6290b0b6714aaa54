"""The WebUI's prompt-schedule parse per individual: unweighted vs old rendering vs new rendering.

Before any emphasis is read, the WebUI (A1111 v1.10.1, and Forge with the same file) runs every
prompt through `modules/prompt_parser.get_learned_conditioning_prompt_schedules`, a lark Earley
grammar whose parse time grows with about the cube of the number of emphasis groups (see the
docstring of the package lib_pinning/prompt/). For prompts of 25/50/100/200 words, one weight per word:

  (a) unweighted: the prompt as written (plain text);
  (b) old:        the per-word rendering without the schedule guard (this project before issue 10);
  (c) new:        `PromptSpace.render` as it is now (guarded parts, weights in the default range).

The real parser is imported from the A1111 tree (tests/webui_parser.py: ../shared/webui's tarball
or PROMPT_PINNING_A1111); it needs lark (the WebUI pins 1.1.2). Each timing is the median of
--repeats calls (one call where a single call takes longer than --slow seconds). It also checks
that (b) and (c) give the same per-word weights in the real parser and that the schedule parse
takes (c) literally. This is where the guard's speed is measured: the unit tests
(tests/test_render_webui.py) check only what the real parser makes of a guarded prompt.

Usage:  python benchmarks/bench_prompt_parse.py [--words 25 50 100 200] [--repeats 5]
                                                [--update-doc docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, load_average, machine_line, publish  # noqa: E402
from lib_pinning.prompt import PromptSpace  # noqa: E402
from tests import webui_parser  # noqa: E402

logger = logging.getLogger("bench_prompt_parse")
SECTION = "## WebUI prompt parse per individual (bench_prompt_parse.py)"
VOCABULARY = (
    "score_9 score_8_up 1girl solo long hair looking at viewer smile blue eyes red dress outdoors "
    "day sky cloud tree flower grass standing holding umbrella wind detailed background soft light"
).split()
STEPS = 20


def make_prompt(words: int) -> str:
    """A booru-style prompt of `words` words, a comma after every third."""
    out = []
    for k in range(words):
        word = VOCABULARY[k % len(VOCABULARY)] + ("" if k < len(VOCABULARY) else str(k // len(VOCABULARY)))
        out.append(word + ("," if k % 3 == 2 and k + 1 < words else ""))
    return " ".join(out)


def timed(call: Callable[[], object], repeats: int, slow: float) -> float:
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    if first > slow:
        return first
    times = [first]
    for _ in range(repeats - 1):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def real_weights(pp, prompt: str) -> list[tuple[str, float]]:
    """(word, weight) for every word, as the real WebUI's emphasis parser reads the prompt."""
    out = []
    for text, weight in pp.parse_prompt_attention(prompt):
        out += [(word, weight) for word in text.replace(",", " ").split()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow", type=float, default=2.0, help="one call only above this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update-doc", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pp, why = webui_parser.load()
    if pp is None:
        logger.error("cannot run: %s", why)
        return 2
    load_before = load_average()
    rows = []
    for words in args.words:
        prompt = make_prompt(words)
        new_space = PromptSpace(prompt, "", "word")
        old_space = PromptSpace(prompt, "", "word", schedule_guard=False)
        x = np.random.default_rng(args.seed).normal(0.0, 0.3, new_space.dim)
        new, _ = new_space.render(x)
        old, _ = old_space.render(x)
        if real_weights(pp, new) != real_weights(pp, old):
            raise RuntimeError(f"{words} words: the real parser reads the new rendering differently")
        if pp.get_learned_conditioning_prompt_schedules([new], STEPS) != [[[STEPS, new]]]:
            raise RuntimeError(f"{words} words: the schedule grammar does not give up on the guarded rendering")
        times = {}
        for name, text in (("unweighted", prompt), ("old", old), ("new", new)):
            times[name] = timed(lambda: pp.get_learned_conditioning_prompt_schedules([text], STEPS), args.repeats, args.slow)
            logger.info("%3d words  %-10s %.4f s", words, name, times[name])
        rows.append((words, times))
    load_after = load_average()
    lines = [
        "| words | unweighted | old rendering | new rendering | old / unweighted | new / unweighted | old / new |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for words, t in rows:
        lines.append(
            f"| {words} | {t['unweighted'] * 1e3:.2f} ms | {t['old']:.3f} s | {t['new'] * 1e3:.2f} ms "
            f"| {t['old'] / t['unweighted']:.0f}x | {t['new'] / t['unweighted']:.2f}x | {t['old'] / t['new']:.0f}x |"
        )
    notes = [
        f"Machine: {machine_line('lark')}.",
        command_line("bench_prompt_parse.py", ["--words", *map(str, args.words), "--repeats", str(args.repeats)]),
    ]
    if load_before is not None and load_after is not None:
        notes.append(
            f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run "
            "(other processes shared the cores)."
        )
    notes += [
        "",
        "Time of the real A1111 v1.10.1 `get_learned_conditioning_prompt_schedules([prompt], 20)` (what the "
        "WebUI runs for the positive prompt of every individual, on the CPU, before any GPU work; "
        "the negative prompt costs the same again for its own groups). One weight per word, drawn "
        f"N(0, 0.3) around 1 (seed {args.seed}); median of {args.repeats} calls, one call above "
        f"{args.slow:g} s. Old: `(word:w)` per word, the grammar parses it (its ambiguous top rule "
        "makes the work grow with about the cube of the groups). New: the same text behind the "
        "schedule guard (a backslash and a newline at the start of each part without prompt "
        "editing), which the grammar rejects at its first character, so the WebUI takes the part "
        "literally; the real `parse_prompt_attention` reads the same weight for every word in both "
        "(checked by the benchmark, and over random prompts by tests/test_render_webui.py).",
        "",
        "\n".join(lines),
    ]
    body = "\n".join(notes)
    publish(body, SECTION, args.update_doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
