"""The environment ``turnout serve`` gives Ray: HAProxy's retry policy lands in Ray's own config.

Ray Serve renders HAProxy's config from a template with no setting for ``option
http-buffer-request``; Turnout's retry policy carries it on a line of its own. These tests render
Ray's installed template with that policy and have HAProxy itself check the result, so a Ray
upgrade that moves the line shows here rather than as lost requests.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

haproxy = pytest.importorskip("ray.serve._private.haproxy")
templates = pytest.importorskip("ray.serve._private.haproxy_templates")

from service.serve_overrides.environment import FAST_SERVE_ENV, HAPROXY_RETRY_ON


def _rendered(retry_on: str) -> str:
    from jinja2 import Environment

    cfg = haproxy.HAProxyConfig(retry_on=retry_on, error_file_path=None, metrics_enabled=False)
    env = Environment()
    env.filters["haproxy_fmt"] = haproxy._haproxy_fmt_literal
    route_info = cfg.build_health_route_info([])
    return env.from_string(templates.HAPROXY_CONFIG_TEMPLATE).render(
        config=cfg, backends=[], grpc_backends=[], backends_with_health_config=[],
        grpc_backends_with_health_config=[], healthz_rules="", grpc_healthz_rules="",
        route_info=route_info, has_ingress_request_router=False,
        multiplexed_model_id_headers=(), metrics_enabled=False,
    ) + "\n"  # as Ray writes it


def _section(config: str, name: str) -> list[str]:
    lines, inside = [], False
    for line in config.splitlines():
        if line and not line[0].isspace():
            inside = line.split()[0] == name
        elif inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


def test_fast_serve_env_sets_the_retry_policy() -> None:
    assert FAST_SERVE_ENV["RAY_SERVE_HAPROXY_RETRY_ON"] == HAPROXY_RETRY_ON


def test_retry_policy_and_buffered_requests_land_in_the_defaults_section() -> None:
    defaults = _section(_rendered(HAPROXY_RETRY_ON), "defaults")
    assert "retry-on conn-failure empty-response" in defaults
    assert "option http-buffer-request" in defaults


def test_haproxy_accepts_the_rendered_config(tmp_path: Path) -> None:
    binary = haproxy.get_haproxy_binary()
    path = tmp_path / "haproxy.cfg"
    path.write_text(_rendered(HAPROXY_RETRY_ON))
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # and HAProxy does tell a broken line from a good one
    path.write_text(_rendered("conn-failure empty-response\n    option no-such-option"))
    broken = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0


def test_each_local_instance_has_its_own_haproxy_files_and_ports() -> None:
    from ray.serve._private import constants

    from service.serve_overrides.environment import haproxy_instance_env

    first, second = haproxy_instance_env(), haproxy_instance_env()
    assert set(first) == set(second) and all(first[name] != second[name] for name in first)
    source = Path(constants.__file__).read_text()
    assert all(f'"{name}"' in source for name in first)  # Ray reads every one of them
    assert Path(first["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent.is_dir()
    assert {first["RAY_SERVE_HAPROXY_STATS_PORT"], first["RAY_SERVE_HAPROXY_METRICS_PORT"]}.isdisjoint({"8404", "9101"})
