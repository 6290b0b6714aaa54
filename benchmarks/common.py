"""What every benchmark shares: a description of the machine and its section of docs/benchmarks.md.

docs/benchmarks.md has one `## ` section per benchmark, each with optional `### ` subsections (one
per configuration: threads, device, profile...). A benchmark rewrites only its own section or
subsection, so the others' figures stay as they were measured.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Mapping, Sequence

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info(*packages: str) -> dict[str, str]:
    """nproc, CPU model, torch and its thread count, python, the given packages' versions, GPU."""
    info = {
        "nproc": str(usable_cores()),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
    }
    for package in packages:
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "not installed"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if os.environ.get(name):
            info[name] = os.environ[name]
    return info


def machine_line(*packages: str) -> str:
    return ", ".join(f"{key} {value}" for key, value in machine_info(*packages).items())


def git_commit() -> str:
    """The short commit of the checkout when the benchmark started (this module's import), flagged
    when tracked files differed from it: figures from uncommitted code cannot be reproduced from the
    commit alone. Read at the start, not when the section is written: a benchmark that runs for half
    an hour would otherwise name whatever was committed meanwhile."""
    return _COMMIT_AT_START


def _read_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # docs/ excluded: the benchmarks write their sections there while a series of them runs
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return head + (" (with uncommitted changes)" if dirty else "")


_COMMIT_AT_START = _read_commit()


def command_line(script: str, argv: Sequence[str] | None = None, note: str = "") -> str:
    """"Command: `python benchmarks/SCRIPT ARGS` (commit C[, note])": how to regenerate a section,
    and the code its figures were measured on."""
    args = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"python benchmarks/{script} {args}".strip()
    return f"Command: `{command}` (commit {git_commit()}{', ' + note if note else ''})."


def load_average() -> float | None:
    """The 1-minute load average: other processes on the cores make wall times noisy; say so."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def replace_block(text: str, heading: str, body: str) -> str:
    """`text` with the block under `heading` (up to the next heading of its level or higher) set
    to `body`, or with the block appended."""
    level = len(heading) - len(heading.lstrip("#"))
    stop = "|".join(re.escape("#" * n + " ") for n in range(1, level + 1))
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^(?:{stop})|\Z)", re.S | re.M)
    block = f"{heading}\n\n{body.strip()}\n\n"
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text, count=1)
    return text.rstrip() + "\n\n" + block


def write_section(
    path: Path, section: str, subsections: Mapping[str, str] | None = None, *, body: str | None = None, intro: str = ""
) -> None:
    """Write `body` as the whole `section` ("## ..."), or the given "### ..." subsections into it.

    The file is read just before it is replaced (atomically), so other benchmarks' sections, even
    ones written meanwhile, are kept.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if body is not None:
        text = replace_block(text, section, body)
    else:
        pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
        match = pattern.search(text)
        block = match.group(0) if match else f"{section}\n\n{intro.strip()}\n\n"
        for heading, sub_body in (subsections or {}).items():
            block = replace_block(block, heading, sub_body)
        block = block.rstrip() + "\n\n"
        text = text[: match.start()] + block + text[match.end() :] if match else text.rstrip() + "\n\n" + block
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text.rstrip() + "\n")
    os.replace(tmp, path)


def publish(body: str, section: str, update_doc: Path | None) -> None:
    """Print a benchmark's section and, with --update-doc, write it into that file."""
    sys.stdout.write(body + "\n")
    if update_doc is not None:
        write_section(update_doc, section, body=body)
        logging.getLogger(__name__).info("updated %s", update_doc)
