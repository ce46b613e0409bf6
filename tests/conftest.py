"""Failing tests report the seeds tests/cases.py::fresh_seed handed them, and how to rerun
them with the same seeds."""

import sys

import pytest


def _seeds_used():
    cases = sys.modules.get("cases")  # not imported: no test drew a seed (and fastscore may not import)
    return cases.SEEDS_USED if cases is not None else []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _seeds_used().clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    seeds = _seeds_used()
    if report.failed and seeds:
        report.sections.append((
            "fastscore seeds",
            f"fastscore seeds used: {', '.join(map(str, seeds))}\n"
            f"rerun with FASTSCORE_TEST_SEED={seeds[0]} pytest '{item.nodeid}'",
        ))
    return report
