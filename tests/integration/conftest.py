"""pytest wiring for the integration tests: a fresh work directory per test, and the stacks
a test makes (harness.Stack) torn down the one way, whatever happens: their logs printed
if a test failed, everything stopped, and the test failed on daemon problems."""

import contextlib
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack, Workdir  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "scale: the scale tier (10,000 users; test_scale.py): scripts/test.sh runs "
        "it on the release build only (-m scale), not under ASan or valgrind (-m 'not scale')")
    config.addinivalue_line(
        "markers", "multihost: several sipbridges and components with Redis Sentinel "
        "(test_cluster.py): scripts/test.sh runs it in the ASan pass, not under "
        "valgrind (-m 'not multihost')")


def failing(request):
    """A function telling, when a fixture's teardown calls it, whether a test failed while
    the fixture was up (a setup or the test itself: their reports are in before teardown
    begins). Counted on the session, so it serves a module's fixture too."""
    session, before = request.session, request.session.testsfailed
    return lambda: session.testsfailed > before


@contextlib.contextmanager
def stacks(request, workdir, **defaults):
    """Yields make(**kw), which starts a Stack(workdir, **defaults, **kw) and returns it.
    On leaving: every stack's logs printed if a test failed meanwhile, every stack
    stopped, and pytest.fail with the problems their stop() reported (bad exits,
    sanitizer reports, new ejabberd errors)."""
    made = []
    failed = failing(request)

    def make(**kw):
        s = Stack(workdir, **dict(defaults, **kw))
        made.append(s)
        return s
    yield make
    problems = []
    for s in made:
        if failed():
            print(s.logs())
        problems += s.stop()
    if problems:
        pytest.fail("daemon problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def workdir():
    wd = Workdir()
    yield wd.path
    wd.cleanup()


@pytest.fixture
def failed(request):
    """failing(request) for a test's fixture that tears down something else than a stack
    (test_kamailio's Kamailio)."""
    return failing(request)


@pytest.fixture
def xmpp():
    """The XMPP server of the stacks stack_factory makes: "prosody", one of each stack's
    own. A module overrides this fixture to run on another (test_ejabberd: one ejabberd
    shared by the module's stacks)."""
    return "prosody"


@pytest.fixture
def stack_factory(workdir, xmpp, request):
    """make(**kw) -> a Stack in the test's work directory (see stacks())."""
    with stacks(request, workdir, xmpp=xmpp) as make:
        yield make


@pytest.fixture(scope="module")
def module_stack_factory(request):
    """stack_factory for the tests of a module that share their stacks (test_faults), in
    a work directory of the module's own."""
    wd = Workdir()
    try:
        with stacks(request, wd.path) as make:
            yield make
    finally:
        wd.cleanup()
