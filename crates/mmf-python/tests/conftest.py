"""Shared fixtures: unique segment names, so that runs in parallel or after a crash never meet."""

import itertools
import os

import pytest

_counter = itertools.count()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A name no other test or process uses."""
    test = request.node.name.replace("[", "-").replace("]", "")[:60]
    return f"pytest-{os.getpid()}-{next(_counter)}-{test}"
