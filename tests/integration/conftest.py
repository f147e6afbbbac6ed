"""pytest wiring for the integration tests: a fresh work directory and server stack per
test, torn down (and logs printed) whatever happens."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack, Workdir  # noqa: E402


@pytest.fixture
def workdir():
    wd = Workdir()
    yield wd.path
    wd.cleanup()


@pytest.fixture
def stack_factory(workdir, request):
    stacks = []

    def make(**kw):
        s = Stack(workdir, **kw)
        stacks.append(s)
        return s
    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    problems = []
    for s in stacks:
        if failed:
            print(s.logs())
        problems += s.stop()
    if problems:
        pytest.fail("daemon problems:\n" + "\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
