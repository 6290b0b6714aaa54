"""`--help` of every command lists every option: argparse formats help texts with %, so one option
whose help says "99% of" broke `demo --help` for everyone."""

from __future__ import annotations

import contextlib
import io

import pytest

from lib_pinning import cli
from lib_pinning.options import PinningOptions


@pytest.mark.parametrize("command", [[], ["demo"], ["resume", "x"], ["report", "x"]])
def test_help_of_every_command_renders(command: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([*command[:1], "--help"])
    assert exit_info.value.code == 0
    if command == ["demo"]:
        text = out.getvalue()
        assert "99%" in text and "%%" not in text  # the guard's help, as written
        assert cli._flag(PinningOptions.spec("stop_stagnation")) in text


@pytest.mark.parametrize("command", ["demo", "pin"])
def test_the_webui_only_options_are_no_flags(command: str) -> None:
    """extra_servers lists servers in the WebUI's settings; on the command line `pin --server` does that."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, "--help"])
    text = out.getvalue()
    assert cli._flag(PinningOptions.spec("stop_stagnation")) in text
    assert cli._flag(PinningOptions.spec("extra_servers")) not in text
