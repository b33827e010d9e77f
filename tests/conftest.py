"""Test tiers: the default suite runs in minutes; ``--slow`` adds the long studies.

Shared fixtures: ``rng`` (a seeded generator per test), ``standalone_project`` (a
cpp_standalone project directory kept between test sessions, so a test's C++ build compiles
again only the files whose generated code changed) and ``executed_notebooks`` (the notebooks the
session's docs build ran, which tests/test_notebooks.py reads instead of running them again).
"""

import shutil

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # keeps each phase's report on the test item, for fixtures that act on the outcome
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def rng():
    """A fresh, seeded generator per test: no global random state."""
    import numpy as np

    return np.random.default_rng(20201)


@pytest.fixture
def standalone_project(request, tmp_path):
    """``standalone_project(name)``: the project directory of a test's cpp_standalone build.

    A whole standalone build compiles ~55 C++ files (~30–60 s on this project's machine).
    Brian2 rewrites only the generated files whose text changed and its makefile rebuilds only
    what is older than its sources, so the directory is kept in pytest's cache
    (``.pytest_cache/d/cdtp-standalone-<name>``; ``make clean`` removes it): a later session
    generates every file again, compares, and compiles only what changed (nothing when the code
    generation did not change). The directory is deleted when the test does not pass, so a build
    broken midway (an interrupted compiler leaves an object file newer than its source) is not
    reused. Without pytest's cache (``-p no:cacheprovider``) it is a fresh temporary directory.
    """
    import gc

    from brian2.devices.device import all_devices

    def forget_other_networks():
        # Brian2 names code objects "<owner>_codeobject", with a suffix _1, _2, … while objects
        # of that name are still alive (uncollected cycles of earlier tests, or the standalone
        # device's last build). A suffix changes every generated file and the makefile, which
        # recompiles everything: start from no such objects, so the names do not depend on
        # which tests ran before
        all_devices["cpp_standalone"].reinit()
        gc.collect()

    forget_other_networks()
    made = []

    def project(name: str) -> str:
        cache = getattr(request.config, "cache", None)
        if cache is None:
            path = tmp_path / name
            path.mkdir()
        else:
            path = cache.mkdir(f"cdtp-standalone-{name}")
        made.append(path)
        return str(path)

    yield project
    forget_other_networks()
    call = getattr(request.node, "report_call", None)
    if call is None or not call.passed:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def executed_notebooks():
    """Where this session's documentation build (tests/test_docs.py::test_docs_build, which
    runs before tests/test_notebooks.py) stored the notebooks of ``analysis/`` it executed:
    ``{"folder": Path}`` once it has run, else empty. The build runs each notebook as
    tests/test_notebooks.py does (``CDTP_NOTEBOOK_SMALL=1``, in ``analysis/``, a kernel per
    notebook) and stores it only when no cell raised, so test_notebooks reads those instead of
    running every notebook a second time."""
    return {}
