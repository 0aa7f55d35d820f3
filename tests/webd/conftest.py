"""pytest fixtures for webd's integration tests (see webdtest.py for the harness)."""

import pytest

import webdtest


@pytest.fixture(scope="module")
def cluster():
    """A PostgreSQL cluster shared by the tests of one module; always stopped afterwards."""
    c = webdtest.PgCluster()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture(scope="module")
def webd(cluster, tmp_path_factory, request):
    """A running webd on the module's cluster, with the module's WEBD_EXTRA settings if it has them."""
    w = webdtest.Webd(tmp_path_factory.mktemp(request.module.__name__), cluster,
                      extra=getattr(request.module, "WEBD_EXTRA", None))
    try:
        w.start()
        yield w
    finally:
        code = w.stop()
    w.check_clean_exit(code)


@pytest.fixture
def new_webd(cluster, tmp_path):
    """new_webd(extra={...}, env={...}, start=True, wrapper=[...], ca=PATH): webd instances of one test, stopped
    afterwards."""
    made = []

    def make(extra=None, env=None, start=True, wrapper=None, ca=None):
        w = webdtest.Webd(tmp_path / f"webd{len(made)}", cluster, extra=extra, env=env, wrapper=wrapper, ca=ca)
        made.append(w)
        return w.start() if start else w
    try:
        yield make
    finally:
        codes = [(w, w.stop()) for w in made]
    for w, code in codes:
        if code is not None:
            w.check_clean_exit(code)
