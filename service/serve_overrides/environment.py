"""The environment of Ray on this machine: loopback binding and Serve's high-throughput mode.

Ray reads these variables when its modules are imported, in this process and in every process it
starts, so :func:`local_ray_environment` runs before Ray is imported and writes ``os.environ``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path

# Ray Serve's high-throughput settings: HAProxy instead of the Python HTTP proxy (connections go
# straight to the entry replicas), gRPC between deployments, the app on the replica's own loop.
# HAProxy also sends a request again to another entry replica when the one it went to closed the
# connection without a byte of answer (the replica or its node was lost): Ray's default retries
# only failed connects and answers such requests 500. Nothing had been answered, so nothing is sent
# twice to the client; the lost replica's work on it is lost with it.
# HAProxy can only send a request again if it holds all of it, so it must read the body before it
# connects (`option http-buffer-request`): without it, a client that writes headers and body apart
# (httpx, the openai client) was answered 500. Ray's template has no setting for the option; the
# retry policy's value ends its line in the `defaults` section, so the option follows it as a line
# of its own (tests/unit/test_serve_env.py renders Ray's template to check it lands there).
# A body larger than HAProxy's buffer (16 KiB; 8 MiB with an ingress request router) is still
# passed on before it is all read, and such a request is not sent again.
HAPROXY_RETRY_ON = "conn-failure empty-response\n    option http-buffer-request"
FAST_SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON,
    # the edge model's ingress request router (routing: prefix_affinity, kv_aware) reads the prompt
    "RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY": "1",
    # HAProxy waits this long for the ingress request router's choice before it answers 503 (Ray's
    # default, 5 s, was exceeded by 2 of 320 requests when two engines held both cores)
    "RAY_SERVE_HAPROXY_INGRESS_REQUEST_ROUTER_TIMEOUT_S": "30",
}
# On one machine HAProxy runs beside the replicas and hears of a removed replica within a second;
# Ray keeps a removed direct-ingress replica reachable for 30 s so that load balancers elsewhere can
# deregister it, which made every Ctrl-C and every replica replacement wait 30 s here.
LOCAL_SERVE_ENV = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
LOOPBACK = "127.0.0.1"
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def local_ray_environment(*, haproxy: bool) -> None:
    """The environment of a local, single-machine Ray instance; call it before importing Ray.

    By default Ray binds its GCS, raylet and agents to the machine's network address (and
    rewrites 127.0.0.1 to it). ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes it treat the host as
    a single-machine cluster on 127.0.0.1. Ray reads these variables when its modules are
    imported, in this process and in every process it starts, so they go into ``os.environ``.
    """
    serve_env = {**FAST_SERVE_ENV, **LOCAL_SERVE_ENV, **haproxy_instance_env()} if haproxy else {}
    for name, value in {**LOOPBACK_RAY_ENV, **serve_env}.items():
        os.environ.setdefault(name, value)


def haproxy_instance_env() -> dict[str, str]:
    """Files and ports of this instance's HAProxy, its own.

    Ray keeps HAProxy's configuration, admin socket and server state in /tmp/haproxy-serve/ and
    its stats and metrics on ports 8404 and 9101, whatever the Ray instance: a second ``turnout
    serve`` on the machine rewrote and reloaded the first one's HAProxy through the shared socket
    (the first graph's port then answered with the second graph's limits). Each instance gets a
    folder (removed at exit) and two free ports of its own.
    """
    folder = Path(tempfile.mkdtemp(prefix="turnout-haproxy-"))
    atexit.register(shutil.rmtree, folder, True)
    stats, metrics = _free_ports(2)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
    }


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
