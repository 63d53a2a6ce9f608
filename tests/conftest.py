"""Options and fixtures for every test area: --hardware, and the real data (skipping cleanly when it is absent).

Each area (tests/device, tests/trainer, tests/bridge) has its own conftest.py that skips the area when its stack is
not installed, so ``pytest tests/device tests/bridge`` runs on a unit with only ``.[unit,serial,dev]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import shared_data


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", default=False,
                     help="run the tests that need real hardware; they fail (not skip) when it is absent")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return  # asked for: a missing camera or framebuffer is a failure, the test says which
    skip_hw = pytest.mark.skip(reason="needs real hardware; run with --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip_hw)


@pytest.fixture
def diaretdb1_root() -> Path:
    """The real DiaretDB1 folder (v1.1 tree and v2.1 XMLs)."""
    return shared_data("diaretdb1")


@pytest.fixture
def eyepacs_256_root() -> Path:
    """The 1,800 real EyePACS images at 256 px with labels.csv."""
    return shared_data("eyepacs_256")


@pytest.fixture
def kaggle_sample_root() -> Path:
    """The 10 original Kaggle photographs and the real trainLabels.csv."""
    return shared_data("eyepacs_kaggle_sample")
