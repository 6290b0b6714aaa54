"""Prompts shown to a person carry no schedule guard: run.json's summaries, the CLI's result lines,
the report's best card and the WebUI's infotexts tell PromptSpace.display's prompts, while the
records keep the prompts that were generated."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from lib_pinning.cli import _print_result
from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.prompt import SCHEDULE_GUARD
from lib_pinning.report import Reporter
from lib_pinning.run import PinningRun, RunResult, derive_seeds
from lib_pinning.store import RunStore
from lib_pinning.webui.result import fallback_infotext, with_shown_prompts

PROMPT = "(red:1.2) circle, blue square"
NEGATIVE = "(blurry:0.9)"


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> RunResult:
    run = PinningRun.start(
        generator=ToyGenerator(ToySettings(steps=4)), prompt=PROMPT, negative_prompt=NEGATIVE,
        seeds=derive_seeds(1, 2), options=PinningOptions(generations=1, cma_lambda=2, cli_log=False),
        runs_dir=tmp_path_factory.mktemp("runs"),
    )
    return run.execute(reporter=Reporter())


def test_the_records_keep_the_generated_prompts_and_run_json_adds_the_shown_ones(result: RunResult) -> None:
    # The prompt as written has emphasis, so even the baseline was generated with the guard.
    assert result.baseline.prompt.startswith(SCHEDULE_GUARD)
    info = RunStore.open(result.run_dir).read_run()
    for key, record in (("best", result.best), ("baseline", result.baseline)):
        summary = info[key]
        assert (summary["prompt"], summary["negative_prompt"]) == (record.prompt, record.negative_prompt)
        shown = (summary["shown_prompt"], summary["shown_negative_prompt"])
        assert shown == result.space.display(record.x_evaluated) == result.shown(record)
        assert SCHEDULE_GUARD not in shown[0] + shown[1]
    assert info["baseline"]["shown_prompt"] == PROMPT and info["baseline"]["shown_negative_prompt"] == NEGATIVE


def test_the_cli_prints_the_shown_prompts(result: RunResult, capsys) -> None:
    _print_result(result)
    lines = capsys.readouterr().out.splitlines()
    prompt, negative = result.shown(result.best)
    assert f"best prompt:   {prompt}" in lines and f"best negative: {negative}" in lines


class _Pre(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}
        self._id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._id = dict(attrs).get("id") if tag == "pre" else None

    def handle_data(self, data: str) -> None:
        if self._id:
            self.texts[self._id] = self.texts.get(self._id, "") + data

    def handle_endtag(self, tag: str) -> None:
        self._id = None


def test_the_reports_copy_boxes_hold_the_shown_prompts(result: RunResult) -> None:
    page = _Pre()
    page.feed(result.report_path.read_text(encoding="utf8"))
    assert (page.texts["best-prompt"], page.texts["best-negative"]) == result.shown(result.best)


def test_a_webui_infotext_tells_the_shown_prompts_and_keeps_its_parameters() -> None:
    generated = (SCHEDULE_GUARD + "(red:1.3) circle", SCHEDULE_GUARD + "(blurry:0.8)")
    shown = ("(red:1.3) circle", "(blurry:0.8)")
    params = "Steps: 20, Sampler: Euler a, Seed: 5, Pin run: 00001"
    infotext = f"{generated[0]}\nNegative prompt: {generated[1]}\n{params}"
    assert with_shown_prompts(infotext, generated, shown) == f"{shown[0]}\nNegative prompt: {shown[1]}\n{params}"
    # Without a negative prompt the WebUI writes no negative line.
    assert with_shown_prompts(f"{generated[0]}\n{params}", (generated[0], ""), (shown[0], "")) == f"{shown[0]}\n{params}"
    # An infotext of other prompts (a style added text) is not rewritten.
    styled = f"{generated[0]}, masterpiece\nNegative prompt: {generated[1]}\n{params}"
    assert with_shown_prompts(styled, generated, shown) == styled
    assert fallback_infotext(shown, 5, {"Pin run": "00001"}) == (
        f"{shown[0]}\nNegative prompt: {shown[1]}\nSeed: 5, Pin run: 00001")


def test_a_result_without_its_space_shows_the_generated_prompts(result: RunResult) -> None:
    bare = RunResult(run_dir=Path(result.run_dir), status="finished", best=result.best, baseline=result.baseline,
                     generations_done=1, evaluations=3)
    assert bare.shown(result.best) == (result.best.prompt, result.best.negative_prompt)


def test_the_maps_clusters_show_their_best_prompts_without_the_guard(result: RunResult, monkeypatch) -> None:
    import numpy as np

    from lib_pinning.analysis import weight_map
    from lib_pinning.report.analysis import weight_map_view

    monkeypatch.setattr(weight_map, "MIN_POINTS", 3)
    monkeypatch.setattr(weight_map, "cluster", lambda vectors: np.zeros(len(vectors), dtype=int))
    data = weight_map.write_weight_map(RunStore.open(result.run_dir))
    (best,) = [c["best"] for c in data["clusters"]]
    assert best["prompt"].startswith(SCHEDULE_GUARD)  # what was generated
    record = next(r for r in RunStore.open(result.run_dir).iter_individuals()
                  if (r.generation, r.index) == (best["generation"], best["index"]))
    assert (best["shown_prompt"], best["shown_negative_prompt"]) == result.shown(record)
    (view,) = weight_map_view(data, present=True)["clusters"]
    assert (view["prompt"], view["negative_prompt"]) == result.shown(record)
