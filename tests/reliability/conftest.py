"""The reliability suite's options and fixtures: short form by default, long form by flag.

    pytest tests/reliability                      # short form (part of ./dev test)
    pytest tests/reliability --reliability-long -s  # long form (docs/reliability.md)

Each test records its figures in `figures`; they are printed at the end of the run and written
to reliability-figures.json in pytest's base temporary directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from tests.support import OriginProcess

FIGURES = pytest.StashKey[dict]()


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-long",
        action="store_true",
        default=False,
        help="run the reliability suite's long form (60 s of load, 20 crash trials, ...)",
    )


@dataclass(frozen=True)
class Form:
    """How hard each reliability test pushes: the short form fits in CI's budget."""

    long: bool
    load_seconds: float
    crash_trials: int
    fuzz_scale: int


@pytest.fixture(scope="session")
def form(request) -> Form:
    if request.config.getoption("--reliability-long"):
        return Form(long=True, load_seconds=60, crash_trials=20, fuzz_scale=4)
    return Form(long=False, load_seconds=10, crash_trials=8, fuzz_scale=1)


@pytest.fixture(scope="session")
def figures(request, tmp_path_factory) -> dict:
    """Figures by test, for docs/reliability.md."""
    found: dict = request.config.stash.setdefault(FIGURES, {})
    yield found
    path = tmp_path_factory.getbasetemp() / "reliability-figures.json"
    path.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter, config):
    found = config.stash.get(FIGURES, None)
    if found:
        terminalreporter.section("reliability figures")
        terminalreporter.write_line(json.dumps(found, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def origin():
    """tests/origin.py in a process of its own (the misbehaving origin)."""
    running = OriginProcess()
    yield running
    running.stop()
