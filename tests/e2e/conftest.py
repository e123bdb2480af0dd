"""End-to-end fixtures: an HTTP client for the session's demo graph (tests/graph.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.graph import Deployment


@pytest.fixture(scope="session")
def http(deployment: Deployment) -> Iterator[httpx.Client]:
    with deployment.client() as client:
        yield client
