"""Serve's replica-to-replica gRPC servers listen on the node's address, not on every interface.

With ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` each replica starts a gRPC server that other deployments
call (Ray 2.60 binds it to ``[::]:0``). Whoever reaches that port reaches the model without the
API's keys. Callers connect to the replica's node address (``RunningReplicaInfo.node_ip``), so
binding there loses nothing: 127.0.0.1 on a single-machine Ray, the pod's address on Kubernetes.
Call :func:`bind_replica_grpc_to_node` in a replica's constructor: the server starts after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ANY_INTERFACE = "[::]:"


def node_address(address: str, node_ip: str) -> str:
    """``address`` with an any-interface host replaced by ``node_ip`` (IPv6 in brackets)."""
    if not address.startswith(ANY_INTERFACE):
        return address
    host = f"[{node_ip}]" if ":" in node_ip else node_ip
    return f"{host}:{address[len(ANY_INTERFACE):]}"


def bind_replica_grpc_to_node() -> None:
    """Make this process's Serve replica bind its internal gRPC server to the node's address."""
    import ray
    from ray.serve._private import replica

    original: Callable[[Any, str], int] = getattr(replica.add_port_to_grpc_server, "__wrapped__", replica.add_port_to_grpc_server)
    node_ip = ray.util.get_node_ip_address()

    def on_node(server: Any, address: str) -> int:
        return original(server, node_address(address, node_ip))

    on_node.__wrapped__ = original  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_node
