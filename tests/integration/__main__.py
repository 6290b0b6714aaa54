"""`python -m tests.integration [pytest args]`: the real-WebUI checks, or one line saying why not.

What `make test-integration` runs. When no registered target has a WebUI tree (no tarball in
../shared/webui or $PINNING_WEBUI_TARBALLS, no checkout in the target's environment variable) it
prints one line and exits 0, or exits 1 with PINNING_REQUIRE_WEBUI=1 (CI must not skip them).
Otherwise it runs pytest on tests/integration with the given arguments.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.integration import harness

HERE = Path(__file__).parent


def missing_trees() -> tuple[list[str], list[str]]:
    """(targets that can run, one reason per target that cannot)."""
    for module in sorted(HERE.glob("target_*.py")):
        importlib.import_module(f"tests.integration.{module.stem}")
    ready, reasons = [], []
    for target in harness.registered():
        try:
            target.webui.source()
            ready.append(target.name)
        except harness.Unavailable as e:
            reasons.append(f"{target.name}: {e}")
    return ready, reasons


def main(argv: list[str]) -> int:
    ready, reasons = missing_trees()
    if not ready:
        line = "integration tests skipped: " + "; ".join(reasons or ["no target registered"])
        if harness.require_webui():
            print(f"ERROR (PINNING_REQUIRE_WEBUI=1) {line}", file=sys.stderr)
            return 1
        print(line)
        return 0
    return int(pytest.main([str(HERE), *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
