"""A real multi-node Ray cluster on this machine, started once for the cluster tier.

As the chart lays it out: a head with no CPUs for engines (``num_cpus: 0``: Serve's controller,
the dashboard, the proxies; no model), and worker nodes with the resources the chart's GPU
workers have, as custom resources here: each worker has one ``accel`` (a one-GPU pod) and worker
B also ``node-b`` (a node that a model is pinned to). Every node listens on 127.0.0.1 only, and
every node runs Serve's high-throughput settings (HAProxy, gRPC between deployments), as the
chart's pods do. All nodes share one model store (``TURNOUT_HOME``), as the chart's pods share
its ReadWriteMany volume, the chart's default. Ray's token authentication is on, with one token
in every node's environment (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), as KubeRay's
``authOptions`` sets it in every pod: ``turnout serve``, ``serve deploy`` and the test's calls to
the dashboard all present it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ray reads its authentication mode once per process, when it is first imported: the token goes
# into this process's environment before that, and every node and client started from here
# inherits it.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(24))

import httpx
import psutil
import pytest
from ray.cluster_utils import Cluster

from engine.store.manager import LocalModelManager
from service.serve_overrides.environment import (
    FAST_SERVE_ENV,
    LOOPBACK,
    LOOPBACK_RAY_ENV,
)
from testkit.servers import free_port

ACCEL, NODE_B = "accel", "node-b"
WORKER_CPUS = 2


@dataclass
class RayCluster:
    """The cluster: its address, its dashboard (Serve's REST API) and its worker nodes by name."""

    cluster: Cluster
    dashboard_url: str
    workers: dict[str, Any] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # node id -> worker name ("head" too)

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self, name: str, resources: dict[str, float]) -> None:
        """Start a worker node named ``name`` with ``resources`` beside its CPUs."""
        port = free_port()
        node = self.cluster.add_node(
            num_cpus=WORKER_CPUS, resources=resources, node_ip_address=LOOPBACK,
            metrics_export_port=port, object_store_memory=200 * 1024**2,
        )
        self.workers[name], self.metrics_ports[name] = node, port
        self.names[node.node_id] = name

    def lose_worker(self, name: str) -> list[psutil.Process]:
        """Kill a worker node outright, as a lost machine; the node's processes as they were."""
        node = self.workers.pop(name)
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        processes = raylet.children(recursive=True)
        self.cluster.remove_node(node, allow_graceful=False)
        return processes

    @staticmethod
    def orphans(processes: list[psutil.Process], grace_s: float = 30) -> list[str]:
        """Those of a lost node's ``processes`` still alive ``grace_s`` after the loss (engines
        orphaned by the node's end; an engine process notices within a second, one still
        importing vLLM when its parent died once the import is done), each as "pid command
        line"; they are killed."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in processes):
            time.sleep(0.2)
        survivors = [p for p in processes if _alive(p)]
        described = [f"{p.pid} {_command(p)}" for p in survivors]
        for process in survivors:
            process.kill()
        return described

    def serve_details(self) -> dict[str, Any]:
        """Serve's instance details from the dashboard (what ``serve status`` and KubeRay read)."""
        response = httpx.get(f"{self.dashboard_url}/api/serve/applications/", headers=auth_headers(), timeout=30)
        response.raise_for_status()
        return response.json()

    def replicas(self, app: str, model_id: str) -> list[dict[str, Any]]:
        """The replicas of ``model_id``'s deployment in ``app``: state and the worker's name."""
        details = self.serve_details()
        deployments = details.get("applications", {}).get(app, {}).get("deployments", {})
        deployment = deployments.get("model:" + model_id.replace("/", "--"), {})
        return [
            {"state": r["state"], "node": self.names.get(r.get("node_id") or "", r.get("node_id")), "id": r["replica_id"]}
            for r in deployment.get("replicas", [])
        ]

    def running_on(self, app: str, model_id: str) -> list[str]:
        """The worker names with a RUNNING replica of ``model_id``, sorted."""
        return sorted(r["node"] for r in self.replicas(app, model_id) if r["state"] == "RUNNING")

    def logs_containing(self, text: str) -> list[Path]:
        """The session's log files (every node's, as the dashboard's log view has them) with ``text``."""
        logs = Path(self.cluster.head_node.get_session_dir_path()) / "logs"
        return [f for f in logs.rglob("*") if f.is_file() and text in f.read_text(errors="replace")]

    def requests_served(self, node: str, model_id: str) -> float:
        """``turnout_requests_total`` for ``model_id`` as the node's metrics agent last reported it
        (each entry replica counts what it served; the agent sums its node's replicas)."""
        text = httpx.get(f"http://{LOOPBACK}:{self.metrics_ports[node]}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("ray_turnout_requests_total{") and f'model="{model_id}"' in line
        )

    def serve_deploy(self, config_file: Path) -> None:
        """``serve deploy`` a config file to this cluster, as a user (or KubeRay) does."""
        command = [str(Path(sys.executable).parent / "serve"), "deploy", str(config_file), "--address", self.dashboard_url]
        done = subprocess.run(command, timeout=120, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def auth_headers() -> dict[str, str]:
    """The cluster's token as Ray's HTTP APIs take it."""
    return {"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"}


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:200]
    except psutil.Error:
        return "?"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="package")
def ray_cluster(demo_store: LocalModelManager) -> Iterator[RayCluster]:
    """Head (no CPUs) plus workers A (one ``accel``) and B (one ``accel`` and ``node-b``)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**LOOPBACK_RAY_ENV, **FAST_SERVE_ENV, "TURNOUT_HOME": str(demo_store.root)}.items():
            env.setenv(name, value)
        dashboard_port = free_port()
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": True,
                "dashboard_host": LOOPBACK, "dashboard_port": dashboard_port, "metrics_export_port": free_port(),
            },
        )
        ray = RayCluster(cluster, f"http://{LOOPBACK}:{dashboard_port}")
        ray.names[cluster.head_node.node_id] = "head"
        try:
            ray.add_worker("a", {ACCEL: 1})
            ray.add_worker("b", {ACCEL: 1, NODE_B: 1})
            cluster.wait_for_nodes()
            yield ray
        finally:
            engines = [p for node in [*ray.workers.values()] for p in _descendants(node)]
            cluster.shutdown()
            for process in engines:
                if _alive(process):
                    process.send_signal(signal.SIGKILL)


def _descendants(node: Any) -> list[psutil.Process]:
    try:
        return psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True)
    except (psutil.Error, KeyError, IndexError):
        return []
