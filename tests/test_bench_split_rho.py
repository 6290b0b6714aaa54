"""benchmarks/bench_split_rho.py: it runs, its figures behave, and DEFAULT_SPLIT_RHO cites them."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_split_rho as bench
from pinning_samplers import sampling


def test_more_refresh_parts_more_pairs_and_a_plain_batch_parts_most() -> None:
    plain, rows = bench.run(roots=120)
    by_rho = [row for row in rows if row.sampler == "dpmpp_2m"]
    assert [row.rho for row in by_rho] == list(bench.RHOS)
    parted = [row.parted for row in by_rho]
    assert parted == sorted(parted) and parted[0] < parted[-1]
    assert all(0.0 < row.parted < plain.parted for row in rows)
    assert all(len(row.spread) == bench.BATCH for row in [plain, *rows])
    assert plain.worst(plain) == 1.0
    assert "| DPM++ 2M, plain batch | " in bench.table(plain, rows)


@pytest.mark.slow
def test_the_default_rhos_docstring_states_the_benchmarks_figures() -> None:
    """The figures justifying the default rho are the benchmark's own (1000 roots, its default)."""
    source = " ".join(Path(sampling.__file__).read_text().split())
    assert "benchmarks/bench_split_rho.py" in source
    plain, rows = bench.run(roots=1000)
    by_label = {row.label: row for row in rows}
    default = by_label[f"DPM++ 2M, rho = {sampling.DEFAULT_SPLIT_RHO:.3f}"]
    half = by_label["DPM++ 2M, rho = 0.707"]
    expected = [
        f"at this rho {default.parted:.2f} of the image pairs",
        f"(rho = sqrt(1/2): {half.parted:.2f};",
        f"{by_label['Euler a - Hyperbatch'].parted:.2f} and {by_label['DPM++ 2M SDE - Hyperbatch'].parted:.2f};",
        f"a plain batch: {plain.parted:.2f})",
        f"the worst image keeps {default.worst(plain):.2f} of a plain 2M",
        f"where rho = sqrt(1/2) keeps {half.worst(plain):.2f}",
        f"(Euler a's own noise keeps {by_label['Euler a - Hyperbatch'].worst(plain):.2f})",
    ]
    for phrase in expected:
        assert phrase in source, phrase
