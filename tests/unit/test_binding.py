"""Serve's replica-to-replica gRPC server binds to the node's address (service/binding.py)."""

from __future__ import annotations

import inspect

import pytest
from ray.serve._private import replica

from service.serve_overrides import grpc_binding as binding


@pytest.mark.parametrize(
    ("address", "node_ip", "bound"),
    [
        ("[::]:0", "127.0.0.1", "127.0.0.1:0"),
        ("[::]:50051", "10.1.2.3", "10.1.2.3:50051"),
        ("[::]:0", "fd00::5", "[fd00::5]:0"),
        ("127.0.0.1:7000", "10.1.2.3", "127.0.0.1:7000"),  # an explicit address is kept
    ],
)
def test_an_any_interface_address_becomes_the_nodes(address, node_ip, bound):
    assert binding.node_address(address, node_ip) == bound


def test_the_replica_binds_through_the_patched_function(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(replica, "add_port_to_grpc_server", lambda server, address: calls.append(address) or 1)
    monkeypatch.setattr("ray.util.get_node_ip_address", lambda: "127.0.0.1")
    binding.bind_replica_grpc_to_node()
    binding.bind_replica_grpc_to_node()  # twice: still one layer
    assert replica.add_port_to_grpc_server(object(), "[::]:0") == 1
    assert calls == ["127.0.0.1:0"]


def test_ray_still_binds_the_replica_server_to_every_interface_through_that_function():
    """If Ray changes how the server is bound, the patch no longer applies: this says so."""
    source = inspect.getsource(replica.Replica._on_initialized)
    assert 'add_port_to_grpc_server(self._server, "[::]:0")' in source
