"""Deployment-asset tests: the Helm chart rendered offline, the Dockerfile linted. No cluster, no Ray."""

from __future__ import annotations

import os
from collections.abc import Iterator

import helm_python
import pytest

from tests.deploy.chart import CHART, CI_VALUES, Rendered, load_values, render


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session", params=CI_VALUES, ids=lambda p: p.stem)
def rendered(request: pytest.FixtureRequest, chart: helm_python.Chart) -> Rendered:
    """The chart rendered with each values file under helm/turnout/ci/."""
    return render(chart, load_values(request.param))


@pytest.fixture(autouse=True)
def no_turnout_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """TurnoutConfig reads TURNOUT_* variables; the rendered config alone must be checked."""
    for name in [n for n in os.environ if n.startswith("TURNOUT_")]:
        monkeypatch.delenv(name)
