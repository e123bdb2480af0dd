"""A local ``turnout serve`` listens on loopback only: its Ray (GCS, raylet, object manager, agents,
dashboard and job API, metrics), Serve's proxy and replicas (their replica-to-replica gRPC servers
included, see service/binding.py) and the engines. Ray's ports run code for whoever reaches them
with the cluster's token; Serve's replica ports reach the models without the API's keys.

The one exception is Ray's HAProxy: Ray 2.60 renders its read-only stats page and Prometheus
endpoint as ``bind *:PORT`` with no way to set the address (``RAY_SERVE_HAPROXY_STATS_PORT``,
``RAY_SERVE_HAPROXY_METRICS_PORT`` set the ports only). Neither runs code or reaches a model; on
Kubernetes the chart's NetworkPolicy keeps them inside the release.
"""

from __future__ import annotations

import ipaddress

import psutil
import pytest

from tests.graph import Deployment

pytestmark = pytest.mark.e2e
# HAProxy's read-only stats page and Prometheus endpoint: ports of their own per `turnout serve`
# (service/serve_overrides/environment.py), named in HAProxy's environment; Ray binds them widely.
READ_ONLY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


def haproxy_read_only_ports(root_pid: int) -> set[int]:
    """The stats and metrics ports of the HAProxy under ``root_pid``."""
    haproxy = [p for p in psutil.Process(root_pid).children(recursive=True) if p.name() == "haproxy"]
    assert haproxy, "no HAProxy under the graph"
    env = haproxy[0].environ()
    ports = {int(env[name]) for name in READ_ONLY_PORTS if name in env}
    assert len(ports) == 2, f"HAProxy's stats and metrics ports are not this instance's own: {ports}"
    return ports


def listening(root_pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket in the process tree."""
    root = psutil.Process(root_pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            sockets = process.net_connections(kind="inet")
            name = process.name()
        except psutil.Error:
            continue
        found += [(name, s.laddr.ip, s.laddr.port) for s in sockets if s.status == psutil.CONN_LISTEN]
    return found


def on_loopback(address: str) -> bool:
    """Whether a socket's address is loopback (an IPv6 socket on IPv4's, ``::ffff:127.0.0.1``, too)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_every_port_of_a_local_turnout_serve_is_on_loopback(deployment: Deployment) -> None:
    sockets = listening(deployment.server.process.pid)
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet", "haproxy"} <= names, names  # the whole tree was seen
    assert any(name.startswith("ray::ServeRepli") for name in names), names
    api_port = int(deployment.base_url.rsplit(":", 1)[1])
    assert ("haproxy", "127.0.0.1", api_port) in sockets
    read_only = haproxy_read_only_ports(deployment.server.process.pid)
    assert 8404 not in read_only and 9101 not in read_only  # not Ray's shared defaults
    exposed = [
        s for s in sockets
        if not on_loopback(s[1]) and not (s[0] == "haproxy" and s[2] in read_only)
    ]
    assert exposed == [], f"listening beyond loopback: {exposed}"
