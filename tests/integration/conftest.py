"""pytest fixtures for lbd's integration tests (see lbdtest.py for the harness)."""

import pytest

import lbdtest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    node = request.node
    return any(getattr(getattr(node, "rep_" + w, None), "failed", False)
               for w in ("setup", "call"))


@pytest.fixture
def lbd_path():
    return lbdtest.require_lbd()


@pytest.fixture
def harness(tmp_path, request):
    """Starts backends and lbd for one test; ends them all afterwards."""
    lbdtest.require_lbd()
    h = lbdtest.Harness(tmp_path)
    yield h
    try:
        if _failed(request):
            print(h.report())
    finally:
        h.cleanup()


@pytest.fixture(scope="module")
def module_harness(tmp_path_factory, request):
    """A Harness shared by the tests of one module."""
    lbdtest.require_lbd()
    h = lbdtest.Harness(tmp_path_factory.mktemp(request.module.__name__))
    yield h
    h.cleanup()


@pytest.fixture
def backends(harness):
    """backends(n, **kw) starts n test backends and waits for each to be ready."""
    return harness.backends


@pytest.fixture
def lbd(harness):
    """lbd(backends, args=[...], ...) starts lbd and waits for it to be ready."""
    return harness.lbd


@pytest.fixture
def free_port():
    return lbdtest.free_port
