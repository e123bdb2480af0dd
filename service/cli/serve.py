"""``turnout serve`` and ``turnout build-config``: run the graph locally, or describe it for a cluster."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import typer
import yaml

from service.config import TurnoutConfig, load_config
from service.serve_overrides.environment import (
    LOOPBACK,
    local_ray_environment,
)

APP_NAME = "turnout"
CONFIG_OPT = typer.Option(None, "--config", "-c", help="Turnout YAML (default: the demo graph).")


def serve(
    config: Path | None = CONFIG_OPT,
    host: str | None = typer.Option(None, "--host", help="Override server.host."),
    port: int | None = typer.Option(None, "--port", help="Override server.port."),
) -> None:
    """Start Ray (or join the cluster at RAY_ADDRESS), deploy the graph and serve HTTP until Ctrl-C.

    On a cluster it joins, Ctrl-C deletes only Turnout's application; Ray and Serve keep running.
    """
    cfg = _with_overrides(load_config(config), host, port)
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        local_ray_environment(haproxy=cfg.server.haproxy)  # before Ray is imported: read then
    elif _on_loopback(address):
        local_ray_environment(haproxy=False)  # a cluster on this machine: join it on loopback
    import ray
    from ray import serve as ray_serve

    from service.graph import build_graph

    started = time.perf_counter()
    _start_ray(ray, cfg, address)
    try:
        ray_serve.start(http_options={"host": cfg.server.host, "port": cfg.server.port})
        ray_serve.run(build_graph(cfg), name=APP_NAME, route_prefix="/", blocking=False)
        _announce(cfg, time.perf_counter() - started, joined=bool(address))
        _wait_for_signal()
    finally:
        typer.echo("shutting down", err=True)
        if address:
            ray_serve.delete(APP_NAME)
        else:
            ray_serve.shutdown()
        ray.shutdown()


def build_config(
    config: Path | None = CONFIG_OPT,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    host: str | None = typer.Option(
        None, "--host", help="Bind address of every node's HTTP proxy (default: server.host; "
        "0.0.0.0 to take API traffic from other machines)."
    ),
) -> None:
    """Print a Ray Serve config file (``serve deploy`` format) for this Turnout configuration."""
    text = yaml.safe_dump(serve_config(_with_overrides(load_config(config), host, None)), sort_keys=False)
    if output:
        output.write_text(text)
    else:
        typer.echo(text)


def serve_config(cfg: TurnoutConfig) -> dict[str, Any]:
    """The Serve config: one application built by ``service.graph:app_builder`` from ``cfg``.

    API keys are left out: on a cluster they come from ``TURNOUT_AUTH__API_KEYS`` or a key file.
    """
    turnout = cfg.model_dump(mode="json", exclude={"auth": {"api_keys"}}, exclude_none=True)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.server.host, "port": cfg.server.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "service.graph:app_builder",
                "args": {"turnout": turnout},
            }
        ],
    }


def _with_overrides(cfg: TurnoutConfig, host: str | None, port: int | None) -> TurnoutConfig:
    server = cfg.server.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    return cfg.model_copy(update={"server": server})


def _start_ray(ray: Any, cfg: TurnoutConfig, address: str | None) -> None:
    if address:
        ray.init(address=address, **(local_ray_options() if _on_loopback(address) else {}))
        return
    ray.init(
        include_dashboard=True,
        dashboard_host=LOOPBACK,
        dashboard_port=cfg.server.dashboard_port,
        _metrics_export_port=cfg.server.metrics_export_port,
        **local_ray_options(),
    )


def _on_loopback(address: str) -> bool:
    """Whether a Ray address (``host:port``, ``ray://host:port`` or ``auto``) is on this machine's loopback."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in {"127.0.0.1", "localhost"}


def local_ray_options() -> dict[str, Any]:
    """``ray.init`` options of a local Ray instance (after :func:`local_ray_environment`)."""
    return {"_node_ip_address": LOOPBACK}


def _announce(cfg: TurnoutConfig, seconds: float, *, joined: bool) -> None:
    base = f"http://{cfg.server.host}:{cfg.server.port}"
    typer.echo(f"Turnout is serving {len(cfg.models)} model(s) after {seconds:.0f}s")
    typer.echo(f"  OpenAI API:      {base}/v1  (models: {base}/v1/models)")
    if not joined:
        typer.echo(f"  Ray dashboard:   http://127.0.0.1:{cfg.server.dashboard_port}")
        typer.echo(f"  Prometheus text: http://127.0.0.1:{cfg.server.metrics_export_port}/metrics")
    typer.echo(f"  Dashboard token: {token_hint()}")
    typer.echo("Press Ctrl-C to stop." if not joined else "Press Ctrl-C to remove Turnout (the cluster keeps running).")


def token_hint() -> str:
    """How to open the Ray dashboard: its page asks for the cluster's token, its API needs it."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the page asks for it: give it this cluster's RAY_AUTH_TOKEN"
    return "the page asks for it: print it with `.venv/bin/ray get-auth-token`"


def _wait_for_signal() -> None:
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop["now"]:
        time.sleep(0.5)
