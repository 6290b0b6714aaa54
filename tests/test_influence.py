"""Per-unit influence (lib_pinning.analysis.influence): known slopes on synthetic records, and the
influence.json, report sections and summaries of a real short toy run."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lib_pinning.analysis import influence
from lib_pinning.analysis.influence import INERT, LOOSENING, TIGHTENING, UNKNOWN, UnitInfo
from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.report import Reporter
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.store import IndividualRecord, RunStore

UNITS = [UnitInfo(0, "positive", "A"), UnitInfo(1, "positive", "B"), UnitInfo(2, "negative", "C")]
# The known loss: A tightens (slope -1 at the centre), B loosens (+0.8), C does nothing. The
# curvatures put the minimum far outside the sampled cloud (as where the weight range stops a
# unit): inside it the slopes keep their signs, at a minimum they would all vanish.
CENTER = np.array([0.3, -0.2, 0.1])
SLOPES = np.array([-1.0, 0.8, 0.0])
CURVATURE = np.array([0.4, 0.3, 0.0])


def true_loss(x: np.ndarray) -> float:
    z = x - CENTER
    return float(0.5 + SLOPES @ z + CURVATURE @ z**2)


def true_slopes(x: np.ndarray) -> np.ndarray:
    """The gradient of true_loss at x: the slopes the fit must recover at its centre."""
    return SLOPES + 2 * CURVATURE * (np.asarray(x) - CENTER)


def record(g: int, i: int, x: np.ndarray, loss: float, **changes) -> IndividualRecord:
    fields = dict(
        generation=g, index=i, x=list(x), x_evaluated=list(x), weights=[[1.0]] * len(x), prompt="p",
        negative_prompt="n", seeds=[1, 2], fitness=[loss], loss=loss,
        components={"part": 2 * loss, "flat": 1.0 + 0.0 * loss},
    )
    return IndividualRecord(**{**fields, **changes})


def synthetic(n: int = 80, noise: float = 0.005, seed: int = 3, flip: float = 1.0) -> list[IndividualRecord]:
    """Points around CENTER, as a converging CMA-ES samples them."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(n):
        x = CENTER + rng.normal(scale=0.15, size=3)
        records.append(record(1 + k // 10, k % 10, x, flip * true_loss(x) + rng.normal(scale=noise)))
    # What must not count: a failed, a degenerate and a repeated individual with absurd losses.
    records.append(record(9, 0, CENTER + 0.01, -100.0, status="failed"))
    records.append(record(9, 1, CENTER + 0.02, -100.0, guard={"reasons": [["black"], []], "penalised": True}))
    records.append(record(9, 2, CENTER + 0.03, -100.0, repeat_of=[1, 1]))
    return records


def by_text(data):
    return {u["text"]: u for u in data["units"]}


def test_known_quadratic_classes_and_intervals_cover_the_true_slopes():
    data = influence.estimate(synthetic(), UNITS)
    units = by_text(data)
    assert [units[t]["class"] for t in "ABC"] == [TIGHTENING, LOOSENING, INERT]
    expected = true_slopes(data["center"]["x"])
    assert expected[0] < 0 < expected[1]  # the centre (the best point) is near CENTER
    for text, slope in zip("ABC", expected):
        low, high = units[text]["interval"]
        assert low <= slope <= high, (text, low, slope, high)
    # Raising A's weight lowers the loss; lowering it raises it; B the other way round.
    assert units["A"]["up"] < 0 < units["A"]["down"]
    assert units["B"]["up"] > 0 > units["B"]["down"]
    assert data["model"] == "quadratic" and data["points_available"] == 80  # the three bad records left out
    assert data["center"]["loss"] == min(r.loss for r in synthetic() if r.status == "ok" and not r.degenerate
                                         and r.repeat_of is None)
    # Each objective part gets its own fit: "part" is twice the loss, "flat" never changes.
    assert units["A"]["components"]["part"]["slope"] == pytest.approx(2 * units["A"]["slope"], rel=1e-6)
    assert units["A"]["components"]["flat"]["class"] == INERT


def test_the_neighbourhood_grows_with_the_run():
    """A fixed count of points would leave most of a long run's evaluations out of the fit."""
    assert influence.estimate(synthetic(n=40), UNITS)["points"] == 30  # MIN_NEIGHBOURS
    long = influence.estimate(synthetic(n=400), UNITS)
    assert long["points_available"] == 400 and long["points"] == 200  # the nearest half


def test_the_sign_convention_follows_the_loss():
    """A loss that is the mirror image swaps tightening and loosening: the sign is not hard-wired."""
    mirrored = influence.estimate(synthetic(flip=-1.0), UNITS)
    units = by_text(mirrored)
    assert units["A"]["class"] == LOOSENING and units["B"]["class"] == TIGHTENING
    assert units["A"]["slope"] > 0 > units["B"]["slope"]


def test_deterministic_and_json_safe():
    first = influence.estimate(synthetic(), UNITS)
    second = influence.estimate(synthetic(), UNITS)
    assert first == second
    json.dumps(first, allow_nan=False)


def test_too_few_points_or_a_wide_interval_cannot_tell():
    few = influence.estimate(synthetic(n=4), UNITS)
    assert [u["class"] for u in few["units"]] == [UNKNOWN] * 3 and "too few" in few["notes"][0]
    # Still named: the sweep measures around the best usable point.
    best = min((r for r in synthetic(n=4) if influence.usable(r, 3)), key=lambda r: r.loss)
    assert few["center"] == {"generation": best.generation, "index": best.index, "x": [float(v) for v in best.x_evaluated],
                             "loss": best.loss}
    noisy = influence.estimate(synthetic(n=12, noise=2.0), UNITS)
    assert UNKNOWN in {u["class"] for u in noisy["units"]}


def test_summary_lines_name_the_tightest_and_loosest():
    data = influence.estimate(synthetic(), UNITS)
    tight, loose = influence.summary_lines(data)
    assert tight.startswith("tightest units: 'A' (-") and "'B'" not in tight
    assert loose.startswith("loosest units:  'B' (+") and "'A'" not in loose
    assert "1 tightening" in tight and "1 inert" in tight
    # C (negative prompt, inert) leans one way or the other by noise: listed with its class.
    assert "'C' (negative)" in tight + loose and ", inert)" in tight + loose


def test_a_summary_number_leans_the_way_its_unit_is_ranked():
    # At the bottom of its curve a unit raises the loss both ways (up > 0) while its slope says
    # which way it leans: the line tells the slope's change, never a "tightest" unit with a rise.
    unit = {"text": "blue", "side": "positive", "slope": -0.02, "standardized": -0.4, "up": 0.003,
            "class": influence.UNKNOWN}
    tight, loose = influence.summary_lines({"units": [unit]})
    assert tight.startswith(f"tightest units: 'blue' (-0.002 loss at weight +{influence.STEP:g}, cannot tell)")
    assert loose == "loosest units:  none"


# -- a real short toy run ---------------------------------------------------------------------------


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.ids.update(v for k, v in attrs if k == "id" and v)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    options = PinningOptions(generations=3, cma_lambda=4, cli_log=False, stop_early=False)
    run = PinningRun.start(
        generator=ToyGenerator(ToySettings(steps=6)), prompt="a red circle, (blue square:1.2)",
        negative_prompt="green", seeds=derive_seeds(5, 3), options=options, runs_dir=tmp_path_factory.mktemp("runs"),
    )
    return run.execute(reporter=Reporter(budget=None)).run_dir


def test_a_toy_run_writes_influence_json_for_every_unit(toy_run):
    data = json.loads((toy_run / influence.INFLUENCE_FILE).read_text())
    space = json.loads((toy_run / "run.json").read_text())["space"]
    assert [(u["index"], u["text"]) for u in data["units"]] == [(u["index"], u["text"]) for u in space["units"]]
    assert {u["side"] for u in data["units"]} == {"positive", "negative"}
    assert all(u["class"] in influence.CLASSES for u in data["units"])


def test_the_report_has_the_influence_and_weight_map_sections(toy_run):
    parser = _Sections()
    html = (toy_run / "index.html").read_text()
    parser.feed(html)
    assert {"influence", "weight-map"} <= parser.ids
    assert "green" in html.split('id="influence"', 1)[1]  # the negative prompt's unit is shown there


def test_hostile_unit_text_is_escaped(tmp_path):
    from lib_pinning.report.analysis import influence_view

    data = influence.estimate(synthetic(), [UnitInfo(0, "positive", "<script>x</script>"), *UNITS[1:]])
    view = influence_view(data, present=False)
    from lib_pinning.report.page import environment

    html = environment().get_template("analysis.html.j2").render(influence=view, weight_map=None, influence_failed=False, weight_map_failed=False, update=0)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_the_cli_and_the_webui_summaries_come_from_influence_json(toy_run, capsys):
    from types import SimpleNamespace

    from lib_pinning.cli import _influence_lines
    from lib_pinning.webui.result import influence_lines

    data = json.loads((toy_run / influence.INFLUENCE_FILE).read_text())
    lines = _influence_lines(toy_run)
    assert lines == influence.summary_lines(data)
    assert lines[0].startswith("tightest units:") and lines[1].startswith("loosest units:")
    (webui,) = influence_lines(SimpleNamespace(run_dir=toy_run))
    assert "tightest units:" in webui and "loosest units:" in webui
    assert influence_lines(SimpleNamespace(run_dir=toy_run / "missing")) == []
