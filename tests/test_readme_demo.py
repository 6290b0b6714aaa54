"""The README's walkthrough quotes what the main command (`python -m lib_pinning demo`) prints: run
it and hold the README to it, so a change of the defaults cannot leave the README describing a run
that no longer happens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lib_pinning import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_walkthrough_numbers_are_what_the_demo_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    step = README.read_text().split("4. **Result.**", 1)[1].split("\n\n", 1)[0]
    claimed = re.search(r"loss goes from ([\d.]+) to ([\d.]+) \(found in generation (\d+)\)", step)
    stop = re.search(r"stops\s+after generation (\d+), (\d+) of the (\d+) planned batches", step)
    assert claimed and stop, "the walkthrough's sentence changed: update this test with it"
    assert cli.main(["demo", "--runs-dir", str(tmp_path)]) in (0, None)
    out = capsys.readouterr().out
    baseline = float(re.search(r"baseline loss:\s+([\d.]+)", out).group(1))
    best = re.search(r"best loss:\s+([\d.]+) \(generation (\d+)", out)
    batches, generations = map(int, re.search(r"evaluations:\s+(\d+) batches, (\d+) generations", out).groups())
    assert f"{baseline:.3f}" == claimed.group(1) and f"{float(best.group(1)):.3f}" == claimed.group(2)
    assert best.group(2) == claimed.group(3)
    assert (generations, batches) == (int(stop.group(1)), int(stop.group(2)))
    assert "stagnation" in out
