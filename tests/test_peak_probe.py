"""The FMA peak probe that every "% of peak" is quoted against (fastscore.machine.fma_peak).

Its chain counts must cover FMA latency x pipes (4 x 2 on today's x86 cores) and stay within
the register file beside the probe's two constants, or the probe measures spills instead of the
FMA units (16 chains on AVX2's 16 registers read 112-116 GFLOP/s on a Zen 3 whose 12 chains
reach 198-204). The peak is the best count's median.
"""

from __future__ import annotations

import pytest

import fastscore as fs
from fastscore import machine

pytestmark = pytest.mark.skipif(not fs.backends()["cpu"]["available"], reason="no compiled cpu backend")


def core():
    from fastscore import _core

    return _core


def test_chain_counts_cover_latency_and_fit_the_registers():
    info = core().build_info()
    counts = info["fma_chains"]
    assert counts == sorted(set(counts)) and len(counts) >= 3
    assert counts[0] >= 8  # latency 4 x 2 pipes
    assert counts[-1] + 2 <= info["vector_registers"]
    assert info["fma_width"] * 4 * 8 == {"AVX-512": 512, "AVX2": 256, "SSE2": 128}[info["isa"]]


def test_the_peak_is_the_best_chain_count_and_reports_the_clock():
    peak = machine.fma_peak(threads=1, repeats=1)
    assert set(peak["by_chains"]) == set(core().build_info()["fma_chains"])
    assert peak["gflops"] == max(peak["by_chains"].values()) == peak["by_chains"][peak["chains"]] > 0
    assert peak["threads"] == 1
    if peak["nominal_ghz"]:
        assert peak["flop_per_nominal_cycle"] == pytest.approx(peak["gflops"] / peak["nominal_ghz"])


def test_probes_check_their_arguments():
    _core = core()
    for call in (lambda: _core.fma_chains_gflops(7), lambda: _core.fma_chains_gflops(8, 0),
                 lambda: _core.fma_chains_gflops(8, 10, -1)):
        with pytest.raises(ValueError):
            call()

