"""The report's refresh budget and its fast drawing paths.

Budget: a live update (final=False) is skipped while the report has used more than its share of
the run's wall time, and an update that runs draws only what its share allows; the work waits and
a later update, at the latest the final one, does it. Whatever the budget, the page links only
files that exist, and a final update leaves the report complete.

Drawing: the loss plots and the CMA plot are blitted over a cached background; a blitted PNG must
match an ordinary draw of the same figure, and the background must be drawn again only when the
axes' limits change.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lib_pinning.report import Reporter, layout, plots, search_plots
from lib_pinning.report.media import png_rgb
from lib_pinning.store import GenerationRecord
from tests.report_synthetic import SyntheticRun
from tests.test_report import page_data, parse

LAMBDA = 3


# helpers -----------------------------------------------------------------------------------------


def linked_files(index: Path) -> set[str]:
    """Every local file the page shows or links, as the browser would request it: the template's
    img/a attributes and the paths report.js builds from the rows."""
    parsed = parse(index)
    links: set[str] = set()
    for tag, attributes in parsed.elements:
        for key in ("src", "href"):
            value = attributes.get(key)
            if tag in ("img", "a") and value and not value.endswith("/"):
                links.add(value.split("?", 1)[0])
    _, rows = page_data(index)
    for row in rows:
        if row.get("gif"):
            links.add(f"{row['dir']}/{layout.INDIVIDUAL_GIF}")
        if row.get("plot"):
            links.add(f"{row['dir']}/{layout.INDIVIDUAL_LOSS_PLOT}")
        if row.get("img"):
            links.add(f"{row['dir']}/{row['img']}")
    return links


def assert_links_exist(root: Path) -> None:
    missing = sorted(link for link in linked_files(root / layout.INDEX_HTML) if not (root / link).is_file())
    assert not missing, missing


def assert_complete(run: SyntheticRun) -> None:
    """Every artifact of every individual and complete generation exists, and the page says so."""
    root = run.store.root
    for record in run.records:
        folder = run.store.individual_dir(record.generation, record.index)
        if record.status == "ok":
            assert (folder / layout.INDIVIDUAL_LOSS_PLOT).is_file(), folder
            assert (folder / layout.INDIVIDUAL_GIF).is_file(), folder
    for summary in [None, *run.generation_records]:
        number = 0 if summary is None else summary.generation
        folder = run.store.generation_dir(number)
        assert (folder / layout.GENERATION_LOSS_PLOT).is_file() and (folder / layout.CONTACT_SHEET).is_file()
    assert (root / layout.CMA_PLOT).is_file() and (root / layout.FINAL_GIF).is_file()
    _, rows = page_data(root / layout.INDEX_HTML)
    assert len(rows) == len(run.records)
    assert not [r for r in rows if r.get("pd")]
    assert all(r["gif"] and r["plot"] for r in rows if r["s"] == "ok")
    assert "pending" not in "".join(parse(root / layout.INDEX_HTML).text)
    assert_links_exist(root)


def decoded(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def assert_same_pixels(blitted: bytes, reference: bytes) -> None:
    """Near identity: measured identical here (0 pixels differ); a different matplotlib may round
    the compositing of an edge pixel differently, never more."""
    a, b = decoded(blitted), decoded(reference)
    assert a.shape == b.shape
    differing = int(np.count_nonzero(np.abs(a - b).max(axis=2) > 2))
    assert differing <= 0.0005 * a.shape[0] * a.shape[1], differing


# the budget --------------------------------------------------------------------------------------


def test_a_tiny_budget_skips_live_updates_and_final_draws_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """budget=0: the first update draws one item (the best individual's artifacts: an update that
    runs always advances), every later live update is skipped, the final one draws the rest."""
    run = SyntheticRun(tmp_path / "00000-tiny", lambda_=LAMBDA, batch=2, size=8, generations=3)
    reporter = Reporter(budget=0.0)
    run.baseline()
    run.generation(1)
    reporter.update(run.store)
    assert not reporter.last_update_skipped and reporter.skipped == 0
    drawn = reporter.rendered[layout.INDIVIDUAL_LOSS_PLOT] + reporter.rendered[layout.CMA_PLOT]
    assert drawn == 1 and reporter.pending > 0
    assert_links_exist(run.store.root)

    with caplog.at_level(logging.DEBUG, logger="lib_pinning.report"):
        for generation in (2, 3):
            run.generation(generation)
            before = reporter.rendered.copy()
            reporter.update(run.store)
            assert reporter.last_update_skipped
            assert reporter.rendered == before  # nothing drawn, nothing read
    assert reporter.skipped == 2
    assert sum("update skipped" in message for message in caplog.messages) == 2
    _, rows = page_data(run.store.root / layout.INDEX_HTML)
    assert {r["g"] for r in rows} == {0, 1}  # the page of the last update that ran

    run.finish("finished")
    reporter.update(run.store, final=True)
    assert reporter.pending == 0
    assert_complete(run)


def test_the_page_links_only_existing_files_while_artifacts_lag(tmp_path: Path) -> None:
    run = SyntheticRun(tmp_path / "00001-lag", lambda_=LAMBDA, batch=2, size=8, generations=2)
    reporter = Reporter(budget=0.0)
    run.baseline()
    run.generation(1)
    reporter.update(run.store)
    root = run.store.root
    index = root / layout.INDEX_HTML
    _, rows = page_data(index)
    pending = [r for r in rows if r.get("pd")]
    assert pending, "the first update under budget 0 should leave individuals pending"
    for row in pending:
        assert not row["gif"] and not row["plot"]
        assert not (root / row["dir"] / layout.INDIVIDUAL_LOSS_PLOT).exists()
        assert (root / row["dir"] / row["img"]).is_file()  # the batch image itself is shown
    best = [r for r in rows if [r["g"], r["i"]] == page_data(index)[0]["best"]]
    assert best and best[0]["gif"] and not best[0].get("pd")  # the best is drawn first
    assert (root / layout.BEST_GIF).is_file()
    text = "".join(parse(index).text)
    assert "pending" in text  # the completed generations' plots wait too
    assert_links_exist(root)


def test_a_skipped_updates_work_appears_in_the_next_one(tmp_path: Path) -> None:
    run = SyntheticRun(tmp_path / "00002-coalesce", lambda_=LAMBDA, batch=2, size=8, generations=3)
    reporter = Reporter(budget=0.0)
    run.baseline()
    run.generation(1)
    reporter.update(run.store)
    run.generation(2)
    reporter.update(run.store)
    assert reporter.last_update_skipped

    reporter.budget = None  # the next live update runs and has time for everything
    run.generation(3)
    reporter.update(run.store)
    assert not reporter.last_update_skipped and reporter.pending == 0
    _, rows = page_data(run.store.root / layout.INDEX_HTML)
    assert [(r["g"], r["i"]) for r in rows] == [(0, 0)] + [(g, i) for g in (1, 2, 3) for i in range(LAMBDA)]
    assert all(r["gif"] and r["plot"] and not r.get("pd") for r in rows)
    for generation in (1, 2, 3):
        assert (run.store.generation_dir(generation) / layout.GENERATION_LOSS_PLOT).is_file()
    assert_links_exist(run.store.root)
    assert reporter.rendered[layout.INDIVIDUAL_LOSS_PLOT] == 1 + 3 * LAMBDA  # each drawn once


def test_an_interrupted_runs_final_update_completes_the_report(tmp_path: Path) -> None:
    """Interrupted in the middle of a generation, with work pending: the final update draws it all
    (the half generation's individuals too; its generation plots wait for its generation.json)."""
    run = SyntheticRun(tmp_path / "00003-interrupted", lambda_=LAMBDA, batch=2, size=8, generations=4)
    reporter = Reporter(budget=0.0)
    run.baseline()
    for generation in (1, 2):
        run.generation(generation)
        reporter.update(run.store)
    run.generation(3, stop_after=2)
    run.finish("interrupted")
    reporter.update(run.store, final=True)
    assert reporter.pending == 0
    assert_complete(run)
    meta, rows = page_data(run.store.root / layout.INDEX_HTML)
    assert meta["status"] == "interrupted" and (3, 1) in {(r["g"], r["i"]) for r in rows}
    assert not (run.store.generation_dir(3) / layout.GENERATION_LOSS_PLOT).exists()


def test_a_generous_budget_draws_every_update(tmp_path: Path) -> None:
    """What a slow backend sees: generation time dwarfs the report's, so after the first update
    (one item: no run time measured yet) no update is skipped or left incomplete. Here the share is
    made large by moving the budget's clock an hour back, as if the run had been generating."""
    run = SyntheticRun(tmp_path / "00004-slow", lambda_=LAMBDA, batch=2, size=8, generations=4)
    reporter = Reporter(budget=0.1)
    run.baseline()
    run.generation(1)
    reporter.update(run.store)
    assert reporter.pending > 0  # the first update drew one item
    assert reporter._clock_start is not None
    reporter._clock_start -= 3600.0
    for generation in (2, 3, 4):
        run.generation(generation)
        reporter.update(run.store)
        assert not reporter.last_update_skipped and reporter.pending == 0
    assert reporter.skipped == 0
    assert_links_exist(run.store.root)


def test_budget_must_be_a_share(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Reporter(budget=-0.1)
    assert Reporter().budget == 0.1


# blitting ----------------------------------------------------------------------------------------


def _records(n: int, dim: int = 4, seed: int = 0) -> list[GenerationRecord]:
    rng = np.random.default_rng(seed)
    return [
        GenerationRecord(
            generation=g, evaluations=1 + 5 * g, fitness_min=0.2 / g, fitness_mean=0.3 / g, fitness_max=0.6,
            fitness_std=0.1, best_index=0, best_so_far=[g, 0], best_so_far_fitness=0.2 / g,
            best_so_far_x=(rng.normal(0, 0.3, dim) * g).tolist(), sigma=0.05 * 0.8**g, axis_ratio=1 + 0.2 * g,
            axis_scales=rng.random(dim).tolist(), population_std=(rng.random(dim) * 0.1).tolist(),
            centroid=[0.0] * dim, seconds=0.1,
        )
        for g in range(1, n + 1)
    ]


def test_blitted_plots_match_an_ordinary_draw() -> None:
    rng = np.random.default_rng(1)
    plotter = plots.Plotter()
    for k in range(3):  # the first draws the background, the others restore it
        blitted = plotter.individual.render(rng.random(28), f"generation 1 · individual {k} · loss 0.5")
        assert blitted is not None
        assert_same_pixels(blitted, plotter.individual.blitter.reference_png())
    for k, (pairs, losses) in enumerate(((rng.random(84), rng.random(3)), ([], rng.random(3) * 2))):
        blitted = plotter.generation.render(pairs, losses, f"generation {k}")
        assert blitted is not None
        assert_same_pixels(blitted, plotter.generation.blitter.reference_png())
    records = _records(12)
    for n in (1, 5, 12):
        blitted = plotter.cma.render(records[:n], "CMA-ES · run", evaluations_total=61)
        assert blitted is not None and plotter.cma.blitter is not None
        assert_same_pixels(blitted, plotter.cma.blitter.reference_png())


def test_a_blitted_plot_equals_a_fresh_templates_full_draw() -> None:
    """A template that has blitted many PNGs draws the same pixels as a new one drawing the same
    data (the new one's first PNG draws everything)."""
    rng = np.random.default_rng(2)
    used = plots.IndividualLossPlot()
    for k in range(5):
        used.render(rng.random(28), f"individual {k}")
    values = rng.random(28)
    blitted = used.render(values, "generation 4 · individual 7 · loss 0.123")
    fresh = plots.IndividualLossPlot().render(values, "generation 4 · individual 7 · loss 0.123")
    assert blitted is not None and fresh is not None
    assert_same_pixels(blitted, fresh)
    assert used.blitter.backgrounds == 1


def test_backgrounds_are_redrawn_only_when_limits_change() -> None:
    rng = np.random.default_rng(3)
    plot = plots.IndividualLossPlot()
    for k in range(10):  # FLIP pair losses: always within [0, 1]
        plot.render(rng.random(28), f"individual {k}")
    assert plot.blitter.backgrounds == 1
    plot.render(rng.random(21), "fewer pairs")  # another pair count: another rank axis
    assert plot.blitter.backgrounds == 2
    plot.render(np.array([0.2, 1.3]), "out of range")  # cannot be FLIP, but must still show
    assert plot.blitter.backgrounds == 3
    frame = plot.blitter._frame
    assert isinstance(frame, plots.RowFrame) and frame.low == 0.0 and frame.high >= 1.3
    plot.render(np.array([0.5, 1.0]), "inside the widened range")
    assert plot.blitter.backgrounds == 3  # same count, inside the (grown) range: restored, not redrawn
    plot.render(rng.random(28), "28 pairs again")
    assert plot.blitter.backgrounds == 4
    assert plot.blitter._frame.high == frame.high  # a range never shrinks back

    generation = plots.GenerationLossPlot()
    for g in range(1, 6):  # losses falling towards 0 stay inside the range anchored at 0
        generation.render(rng.random(30), 1.0 / g + rng.random(3) * 0.1, f"generation {g}")
    assert generation.blitter.backgrounds == 1

    # CMA: a stationary run (values that stay within their first generations' snapped limits)
    # redraws its background only while the limits settle
    cma = search_plots.CmaPlot()
    steady = _records(30, seed=4)
    for record in steady:
        record.fitness_min, record.fitness_mean, record.fitness_max = 0.3, 0.4, 0.6
        record.best_so_far_fitness, record.sigma, record.axis_ratio = 0.3, 0.05, 1.5
        record.best_so_far_x = [0.1, -0.2, 0.3, -0.1]
        record.axis_scales = (0.6 + 0.3 * np.asarray(record.axis_scales)).tolist()  # within [0.5, 1]
        record.population_std = (0.06 + 0.3 * np.asarray(record.population_std)).tolist()  # within [0.05, 0.1]
    for n in range(1, 31):
        cma.render(steady[:n], "CMA-ES · run", evaluations_total=151)
    assert cma.blitter is not None and cma.blitter.backgrounds <= 5, cma.blitter.backgrounds
    backgrounds = cma.blitter.backgrounds
    cma.render(steady, "CMA-ES · run", evaluations_total=151)
    assert cma.blitter.backgrounds == backgrounds
    cma.render(steady, "CMA-ES · another run", evaluations_total=151)  # the title is static
    assert cma.blitter.backgrounds == backgrounds + 1


def test_value_range_grows_only() -> None:
    natural = plots.ValueRange((0.0, 1.0))
    assert natural.cover(np.array([0.2, 0.4])) == (0.0, 1.0)
    low, high = natural.cover(np.array([0.5, 1.2]))
    assert low == 0.0 and high > 1.2
    assert natural.cover(np.array([0.3])) == (low, high)
    loss = plots.ValueRange(from_zero=True)
    low, high = loss.cover(np.array([0.8, 0.9]))
    assert low == 0.0 and 0.9 < high < 1.0
    free = plots.ValueRange()
    low, high = free.cover(np.array([5.0, 6.0]))
    assert low < 5.0 and high > 6.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [("pair loss", (0.0, 1.0)), ("aesthetic", (1.0, 10.0)), ("tag:red apple", (0.0, 0.4)), ("brightness", None)],
)
def test_natural_ranges(name: str, expected: Any) -> None:
    assert plots.natural_range(name) == expected


def test_per_image_values_without_a_known_range_are_plotted(tmp_path: Path) -> None:
    plot = plots.IndividualLossPlot()
    png = plot.render([3.5, 7.25, 5.0], "generation 1 · individual 0", what="tags")
    assert png is not None and decoded(png).shape[:2] == (216, 512)
    frame = plot.blitter._frame
    assert isinstance(frame, plots.RowFrame) and frame.low < 3.5 and frame.high > 7.25


def test_png_encoder_round_trips() -> None:
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (17, 23, 4), dtype=np.uint8)
    with Image.open(io.BytesIO(png_rgb(rgba))) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), rgba[..., :3])
    with pytest.raises(ValueError):
        png_rgb(rgba.astype(np.float32))


def test_cma_x_axis_spans_the_whole_run() -> None:
    cma = search_plots.CmaPlot()
    cma.render(_records(3), "CMA-ES · run", evaluations_total=101)
    assert cma.f_ax.get_xlim()[0] == 0.0 and cma.f_ax.get_xlim()[1] >= 101
    assert re.match(r"CMA-ES", cma.title.get_text())
