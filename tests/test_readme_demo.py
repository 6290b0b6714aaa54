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


def test_the_booru_tag_commands_are_the_cli_s_own() -> None:
    """The booru-tag section's commands parse with the CLI's flags (the Pony walkthrough's `pin`
    included: parsing contacts no server), and its toy command is the one tests/test_tagger.py runs."""
    import shlex

    section = README.read_text().split("### Pin to booru tags (WD14 tagger)", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(block.replace("\\\n", " ")) for block in re.findall(r"```\n(python -m lib_pinning .*?)\n```", section, re.S)]
    assert len(commands) == 2, commands
    parser = cli.build_parser()
    pony, toy = (parser.parse_args(c[3:]) for c in commands)
    assert pony.command == "pin" and pony.prompt.startswith("score_9, score_8_up, 1girl")
    assert (pony.tagger_tags, pony.tagger_negative_tags) == ("smile, (outdoors:1.5)", "lowres")
    assert toy.command == "demo" and toy.tagger_tags == "red, circle"
    test_tagger = Path(__file__).with_name("test_tagger.py").read_text()
    command = re.search(r"DEMO_BOORU_COMMAND = \((.*?)\)\n", test_tagger, re.S).group(1)
    assert tuple(commands[1][3:]) == tuple(re.findall(r'"([^"]*)"', command))
