"""Test tiers: the default suite runs in minutes; ``--slow`` adds the long studies."""

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow study: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def rng():
    """A fresh, seeded generator per test: no global random state."""
    import numpy as np

    return np.random.default_rng(20201)
