"""The sensitivity sweep as a run's last stage (option sweep_batches, lib_pinning.sweep_stage): the
option model, batch counts with and without it, interruption and failure, the runs it never starts
on, the summaries, and the remote path (the run loop on fake servers, `sweep RUN_DIR --server`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lib_pinning.cli import build_parser, main
from lib_pinning.generator import ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionError
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.store import RunStore
from lib_pinning.sweep_stage import summary_lines
from lib_pinning.webui import ui

PROMPT = "a red circle, blue square"
SEARCH = 1 + 2 * 3  # the baseline and 2 generations of 3 (stop_early off: every batch is generated)
TINY = dict(generations=2, cma_lambda=3, granularity="phrase", stop_early=False, cli_log=False)


class Counting(ToyGenerator):
    """The toy model, counting its batches; `fail_at` raises (an exception or Ctrl-C) at that call."""

    def __init__(self, fail_at: int | None = None, error: BaseException | None = None, black: bool = False) -> None:
        super().__init__(ToySettings(steps=6))
        self.calls, self.fail_at, self.error, self.black = 0, fail_at, error, black

    def generate(self, request):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        batch = super().generate(request)
        if self.black:
            batch.images = torch.zeros_like(batch.images)
        return batch


def start(tmp_path: Path, generator, **options) -> PinningRun:
    return PinningRun.start(generator=generator, prompt=PROMPT, negative_prompt="", seeds=derive_seeds(5, 3),
                            options=PinningOptions(**{**TINY, **options}), runs_dir=tmp_path)


def influence_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "influence.json").read_text())


# the option ------------------------------------------------------------------------------------------


def test_the_option_is_a_slider_an_infotext_entry_an_api_field_and_a_flag():
    spec = PinningOptions.spec("sweep_batches")
    assert spec.default == 0 and (spec.minimum, spec.maximum, spec.step) == (0, 1000, 2)
    assert ui.component_kind(spec) == "slider" and spec.group in ui.GROUP_TITLES
    options = PinningOptions(sweep_batches=12)
    assert options.to_infotext() == {"Pin sweep batches": "12"}
    assert PinningOptions.from_infotext(options.to_infotext()) == options
    assert PinningOptions.to_infotext(PinningOptions()) == {}  # off: nothing in the infotext
    assert PinningOptions.from_values({"sweep_batches": "12"}) == options  # the API's object form
    for command in ("demo", "pin"):
        args = build_parser().parse_args([command, "--sweep-batches", "12"]
                                         + (["--server", "http://127.0.0.1:1"] if command == "pin" else []))
        assert args.sweep_batches == "12"


@pytest.mark.parametrize("value, expected", [
    (-2, "is not an integer in [0, 1000]"), (5000, "is not an integer in [0, 1000]"), (3, "is odd"), (1, "is odd"),
])
def test_bad_budgets_are_refused_naming_the_option(value, expected):
    with pytest.raises(OptionError) as caught:
        PinningOptions(sweep_batches=value)
    assert "sweep_batches" in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_a_bad_budget_on_the_command_line_is_exit_2_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--runs-dir", str(tmp_path), "--sweep-batches", "7"])
    assert caught.value.code == 2 and "sweep_batches" in capsys.readouterr().err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# the run ---------------------------------------------------------------------------------------------


def test_off_by_default_the_run_generates_no_extra_batch(tmp_path):
    generator = Counting()
    result = start(tmp_path, generator).execute()
    assert generator.calls == result.batches == SEARCH
    assert result.sweep is None and "sweep" not in RunStore.open(result.run_dir).read_run()


def test_a_run_with_the_option_sweeps_its_best_with_its_own_generator(tmp_path):
    generator = Counting()
    events = []
    result = start(tmp_path, generator, sweep_batches=6).execute(on_event=events.append)
    assert result.status == "finished" and result.batches == SEARCH  # the search's count is the search's
    assert generator.calls == SEARCH + 6
    swept = influence_of(result.run_dir)["sweep"]
    assert swept["budget"] == swept["batches"] == 6 and len(swept["units"]) == 2  # 3 pairs over the 2 phrases
    assert influence_of(result.run_dir)["center"]["x"] == list(result.best.x_evaluated)
    assert (result.sweep.status, result.sweep.batches) == ("done", 6)
    info = RunStore.open(result.run_dir).read_run()
    assert info["status"] == "finished" and info["sweep"]["status"] == "done" and info["batches"] == SEARCH
    sweeps = [e for e in events if e.kind == "sweep"]
    assert [(e.sweep_done, e.sweep_total) for e in sweeps] == [(k, 6) for k in range(6)]
    assert events[-1].kind == "end"  # the sweep comes before the final report and the end


def test_resuming_a_swept_run_spends_no_batch_on_the_same_sweep(tmp_path):
    first = start(tmp_path, Counting(), sweep_batches=4).execute()
    before = influence_of(first.run_dir)["sweep"]
    again = Counting()
    result = PinningRun.resume(first.run_dir, again).execute()
    assert again.calls == 0 and result.sweep.status == "done" and result.sweep.batches == 0
    assert influence_of(first.run_dir)["sweep"] == before


@pytest.mark.parametrize("how", ["cancel", "ctrl-c"])
def test_an_interrupted_sweep_is_dropped_and_the_search_and_report_are_kept(tmp_path, how):
    from lib_pinning.report import Reporter

    if how == "cancel":  # Interrupt / Skip / the first Ctrl-C: asked before every sweep batch
        generator = Counting()
        run = start(tmp_path, generator, sweep_batches=6)
        result = run.execute(cancel=lambda: generator.calls >= SEARCH + 2, reporter=Reporter(budget=None))
    else:  # the second Ctrl-C: in the middle of the third sweep batch
        generator = Counting(fail_at=SEARCH + 3, error=KeyboardInterrupt())
        result = start(tmp_path, generator, sweep_batches=6).execute(reporter=Reporter(budget=None))
    assert result.status == "finished" and result.best.status == "ok" and result.batches == SEARCH
    assert (result.sweep.status, result.sweep.batches) == ("interrupted", 2)
    assert "dropped" in result.sweep.message and "lib_pinning sweep" in result.sweep.message
    info = RunStore.open(result.run_dir).read_run()
    assert info["status"] == "finished" and info["sweep"]["status"] == "interrupted"
    assert "sweep" not in influence_of(result.run_dir)  # nothing partial is recorded
    assert "units" in influence_of(result.run_dir)  # the run's own influence is
    html = (result.run_dir / "index.html").read_text()
    section = html.split('id="influence"', 1)[1].split("</section>", 1)[0]
    assert "Sensitivity sweep" not in section


def test_a_failing_sweep_keeps_the_run(tmp_path, caplog):
    generator = Counting(fail_at=SEARCH + 2, error=RuntimeError("CUDA out of memory"))
    result = start(tmp_path, generator, sweep_batches=4).execute()
    assert result.status == "finished" and result.error is None
    assert result.sweep.status == "failed" and "CUDA out of memory" in result.sweep.message
    assert "sweep" not in influence_of(result.run_dir)


def test_no_sweep_after_an_interrupted_search_or_without_a_clean_best_but_one_after_a_short_search(tmp_path):
    stopped = Counting()
    result = start(tmp_path / "a", stopped, sweep_batches=4).execute(cancel=lambda: stopped.calls >= 2)
    assert result.status == "interrupted" and stopped.calls == 2
    assert result.sweep.status == "skipped" and "interrupted" in result.sweep.message
    black = Counting(black=True)  # every batch degenerate: the best is the excluded baseline
    result = start(tmp_path / "b", black, sweep_batches=4).execute()
    assert result.status == "finished" and result.best.excluded and black.calls == SEARCH
    assert result.sweep.status == "skipped" and "no clean" in result.sweep.message
    # 4 evaluations for 2 units are too few for the surrogate (units + 3), not for the sweep:
    # it measures around the best batch.
    short = Counting()
    result = start(tmp_path / "c", short, sweep_batches=4, generations=1).execute()
    assert result.status == "finished" and short.calls == 4 + 4
    assert result.sweep.status == "done" and "sweep" in influence_of(result.run_dir)


# the summaries ---------------------------------------------------------------------------------------


def test_the_summary_uses_the_sweep_when_there_is_one():
    unit = lambda text, slope, cls: {"text": text, "side": "positive", "slope": slope, "class": cls}  # noqa: E731
    data = {"units": [], "sweep": {"batches": 8, "step": 0.2, "units": [
        unit("red", -0.5, "tightening"), unit("blue", 0.25, "cannot tell"), unit("soft", None, "cannot tell")]}}
    tight, loose = summary_lines(data)
    assert tight.startswith("tightest units (sensitivity sweep, 8 batches): 'red' (-0.1 loss at weight +0.2)")
    assert "[1 tightening, 2 cannot tell]" in tight
    assert loose == "loosest units:  'blue' (+0.05 loss at weight +0.2, cannot tell)"
    assert summary_lines({"units": []})[0].startswith("tightest units: none")  # no sweep: the surrogate's


def test_the_demo_prints_the_sweeps_summary(tmp_path, capsys):
    assert main(["demo", "--runs-dir", str(tmp_path), "--batch-size", "3", "--steps", "6", "--generations", "2",
                 "--cma-lambda", "3", "--granularity", "phrase", "--sweep-batches", "4"]) == 0
    out = capsys.readouterr().out
    assert "tightest units (sensitivity sweep, 4 batches): " in out
    assert out.rstrip().splitlines()[-1].startswith("report:")


def test_ctrl_c_in_the_demos_sweep_exits_130_and_says_what_was_kept(tmp_path, capsys, monkeypatch):
    import lib_pinning.cli as cli

    monkeypatch.setattr(cli, "ToyGenerator", lambda settings: Counting(fail_at=SEARCH + 2, error=KeyboardInterrupt()))
    assert main(["demo", "--runs-dir", str(tmp_path), "--generations", "2", "--cma-lambda", "3", "--granularity",
                 "phrase", "--stop-early", "false", "--sweep-batches", "4"]) == 130
    out = capsys.readouterr().out
    assert "status:        finished" in out
    assert "sweep:         Sensitivity sweep interrupted after 1 of 4 batches: dropped" in out
    assert "tightest units: " in out  # the run's own influence, the sweep being dropped


# remote servers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images():
    from lib_pinning.remote.fake import ToyImages

    return ToyImages(ToySettings(steps=6))


def test_a_remote_run_sweeps_on_its_servers_and_the_sweep_command_rebuilds_them(tmp_path, images, capsys):
    from lib_pinning.remote import RemoteGenerator, RemoteSettings, ServerConfig
    from lib_pinning.remote.fake import FakeWebUI

    with FakeWebUI(images) as a:
        generator = RemoteGenerator([ServerConfig(a.url, timeout=10)], RemoteSettings(width=64, height=64, steps=6),
                                    retry_after=0.05)
        generator.check()
        result = start(tmp_path, generator, sweep_batches=4).execute()
        generator.close()
        assert len(a.calls.generations) == SEARCH + 4
    assert result.sweep.status == "done" and influence_of(result.run_dir)["sweep"]["batches"] == 4
    with FakeWebUI(images) as moved:  # the run's server is gone: the sweep goes where --server says
        assert main(["sweep", str(result.run_dir), "--budget", "2", "--server", moved.url]) == 0
        assert len(moved.calls.generations) == 2
    assert capsys.readouterr().out.startswith("sweep: 2 batches")
    assert influence_of(result.run_dir)["sweep"]["batches"] == 2


def test_pins_dry_run_names_the_sweep(tmp_path, images, capsys):
    from lib_pinning.remote.fake import FakeWebUI

    with FakeWebUI(images) as a:
        assert main(["pin", "--server", a.url, "--runs-dir", str(tmp_path), "--dry-run", "--prompt", PROMPT,
                     "--width", "64", "--height", "64", "--sweep-batches", "4"]) == 0
        assert a.calls.generations == []
    assert "sweep:         then 4 batches of sensitivity sweep around the best\n" in capsys.readouterr().out


def test_the_sweep_command_refuses_a_backend_it_cannot_rebuild(tmp_path, capsys):
    result = start(tmp_path, Counting()).execute()
    store = RunStore.open(result.run_dir)
    store.write_run({**store.read_run(), "generator": {"backend": "webui", "mode": "txt2img", "settings": {}}})
    with pytest.raises(SystemExit) as caught:
        main(["sweep", str(result.run_dir), "--budget", "2"])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "cannot rebuild this run's backend ('webui'" in err
    assert "sweep_batches" in err and "--server URL" in err
    with pytest.raises(SystemExit) as caught:  # resume rebuilds backends the same way
        main(["resume", str(result.run_dir)])
    assert caught.value.code == 2 and "the WebUI cannot continue a run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:  # a folder that is not a run
        main(["sweep", str(tmp_path / "nothing"), "--budget", "2"])
    assert caught.value.code == 2
    toy = start(tmp_path, Counting()).execute()
    with pytest.raises(SystemExit) as caught:  # a toy run takes no servers
        main(["sweep", str(toy.run_dir), "--budget", "2", "--server", "http://127.0.0.1:1"])
    assert caught.value.code == 2 and "--server and --api-auth are for runs made with `pin`" in capsys.readouterr().err
