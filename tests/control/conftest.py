"""pytest fixtures for lbd's control-plane tests (see ec2env.py for the harness)."""

import pytest

import ec2env


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    node = request.node
    return any(getattr(getattr(node, "rep_" + w, None), "failed", False) for w in ("setup", "call"))


@pytest.fixture
def ec2_env(tmp_path, request):
    """A fresh moto (signature checking on), fault proxy, agent and upstream; lbd started by the test."""
    env = ec2env.Ec2Env(tmp_path)
    yield env
    try:
        if _failed(request):
            print(env.report())
    finally:
        env.cleanup()


@pytest.fixture
def ec2_env_factory(tmp_path, request):
    """make(**kw) builds an Ec2Env with options (moto_auth, imds_credentials, boot_delay)."""
    envs = []

    def make(**kw):
        env = ec2env.Ec2Env(tmp_path, **kw)
        envs.append(env)
        return env

    yield make
    try:
        if _failed(request):
            for env in envs:
                print(env.report())
    finally:
        for env in envs:
            env.cleanup()


@pytest.fixture
def ha_env(tmp_path, request):
    """An Ec2Env with PostgreSQL and an Elastic IP for two LB hosts (haenv.py); hosts started by the test."""
    import haenv

    env = ec2env.Ec2Env(tmp_path)
    try:
        ha = haenv.HaEnv(env)
    except BaseException:
        env.cleanup()
        raise
    yield ha
    try:
        if _failed(request):
            print(env.report())
            print(ha.report())
    finally:
        try:
            env.cleanup()
        finally:
            ha.cleanup()
