"""End-to-end fixtures: an HTTP client for the session's demo graph (tests/graph.py), and the
session's second graph, with two SmolLM2 replicas."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.store.demo import SMOLLM2_ID
from engine.store.manager import LocalModelManager
from testkit.servers import Server, free_port, turnout_beside
from tests.graph import Deployment
from tests.lifetimes import stop_after_last_use


@pytest.fixture(scope="session")
def http(deployment: Deployment) -> Iterator[httpx.Client]:
    with deployment.client() as client:
        yield client


@dataclass(frozen=True)
class TwoReplicas:
    """The second graph: its ``turnout serve`` process, API base URL, metrics URL and dashboard."""

    server: Server
    base_url: str
    metrics_url: str
    dashboard_url: str

    def running_replicas(self, model_id: str) -> int:
        """How many of ``model_id``'s replicas Serve reports RUNNING (its dashboard's REST API)."""
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        details = httpx.get(f"{self.dashboard_url}/api/serve/applications/", timeout=30,
                            headers={"Authorization": f"Bearer {token}"}).json()
        deployment = details["applications"]["turnout"]["deployments"]["model:" + model_id.replace("/", "--")]
        return sum(r["state"] == "RUNNING" for r in deployment["replicas"])


@pytest.fixture(scope="session")
def two_replicas(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_store: LocalModelManager,
) -> Iterator[TwoReplicas]:
    """SmolLM2 with two replicas, each hosting an engine and serving HTTP behind HAProxy (no core
    binding: the two engines share both cores), prefix-affinity routing between them, and the
    response cache on (the default). Used by the caching and the replica tests; a test that kills
    a replica waits for Serve to replace it before it ends."""
    metrics_port, dashboard_port = free_port(), free_port()
    config = {
        "models": [{
            "id": SMOLLM2_ID, "replicas": 2, "routing": "prefix_affinity",
            "engine": {"cpu_threads_bind": "nobind"},
        }],
        "server": {"metrics_export_port": metrics_port, "dashboard_port": dashboard_port},
        "limits": {"health_check_period_s": 2, "first_token_timeout_s": 60},
    }
    with turnout_beside(config, tmp_path_factory.mktemp("two-replicas"), demo_store.root) as (server, base):
        stop_after_last_use(request, "two_replicas", lambda: server.stop())
        yield TwoReplicas(server, base, f"http://127.0.0.1:{metrics_port}", f"http://127.0.0.1:{dashboard_port}")
