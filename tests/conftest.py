"""Shared fixtures: where the real data lives, and skipping cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real, licensed data is never in the repository: it sits beside the checkout (DESIGN.md §3).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", default=False, help="run tests that need real hardware")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip_hw = pytest.mark.skip(reason="needs real hardware; run with --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip_hw)


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


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
