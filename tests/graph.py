"""The demo graph for end-to-end tests, started once per session with the real ``turnout serve``.

Beside it, vLLM's own OpenAI server stands in for a cloud provider (the same SmolLM2 checkpoint,
served under another name, with an API key); the integration tests of the cloud provider use the
same server. Both run on loopback; the tests talk HTTP to them. The graph reads a store of its
own (the demo models registered in place), so that tests can add LoRA adapters to it while it
runs: its SmolLM2 engine serves up to two adapters beside the base model.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import yaml

from engine.protocol import ModelRecord
from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from engine.store.manager import LocalModelManager
from testkit.servers import (
    GRAPH_ENV,
    REPO,
    Server,
    answers,
    free_port,
    start,
    vllm_server_command,
    wait_until,
)
from tests.lifetimes import stop_after_last_use

CLOUD_NAME = "smollm2-standin"
CLOUD_ID = f"cloud/standin/{CLOUD_NAME}"
CLOUD_KEY_ENV = "TURNOUT_E2E_CLOUD_KEY"
DEEPSEEK_CONTEXT = 2048
DEFAULT_MAX_TOKENS = 128  # what a local model generates for a request without max_tokens
MAX_ONGOING = 64  # the ingress's limit (Parlant starts ~30 requests at once); test_overload goes past it


@dataclass(frozen=True)
class Standin:
    """vLLM's OpenAI server with the demo SmolLM2 as :data:`CLOUD_NAME`: a cloud provider's API."""

    base_url: str  # ends with /v1
    api_key: str
    server: Server


@pytest.fixture(scope="session")
def cloud_standin(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smollm2_record: ModelRecord,
) -> Iterator[Standin]:
    key, port = f"sk-standin-{secrets.token_hex(12)}", free_port()
    server = start(
        vllm_server_command(smollm2_record.path, CLOUD_NAME, port, key),
        tmp_path_factory.mktemp("cloud") / "cloud.log",
        env={"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_NO_USAGE_STATS": "1"},
    )
    stop_after_last_use(request, "cloud_standin", lambda: server.stop(signal.SIGTERM, 30))
    try:
        wait_until(server, lambda: answers(f"http://127.0.0.1:{port}/health"), 400)
        yield Standin(f"http://127.0.0.1:{port}/v1", key, server)
    finally:
        server.stop(signal.SIGTERM, 30)


@pytest.fixture(scope="session")
def graph_store(tmp_path_factory: pytest.TempPathFactory, demo_store: LocalModelManager) -> LocalModelManager:
    """The demo graph's store: the demo models registered in place (nothing copied)."""
    store = LocalModelManager(tmp_path_factory.mktemp("graph-store"))

    async def fill() -> None:
        await store.initialize()
        for model_id in (SMOLLM2_ID, DEEPSEEK_ID, MINILM_ID):
            record = demo_store.get_model(model_id)
            await store.register_model(record.path, record.family, name=record.name)

    asyncio.run(fill())
    return store


@dataclass
class Deployment:
    """The running graph: its API, metrics endpoint, process, store and the cloud stand-in's key."""

    server: Server
    base_url: str
    metrics_url: str
    cloud_key: str
    startup_s: float
    store: LocalModelManager
    hf_token: str = ""  # in the graph's environment (unused offline): it must never show either

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=180)


def e2e_config(cloud_url: str, port: int, metrics_port: int, dashboard_port: int) -> dict:
    """Demo models (SmolLM2 serving adapters), a cloud fallback, a fast circuit breaker, quick
    health probes, no response cache."""
    return {
        "models": [
            {"id": SMOLLM2_ID, "engine": {"cpu_threads_bind": "0", "max_loras": 2, "max_lora_rank": 8}},
            {"id": DEEPSEEK_ID, "engine": {"cpu_threads_bind": "1", "max_model_len": DEEPSEEK_CONTEXT}},
            {"id": MINILM_ID, "engine": {"cpu_threads_bind": "1"}},
        ],
        "cloud_providers": [
            {"name": "standin", "base_url": cloud_url, "api_key_env": CLOUD_KEY_ENV, "max_retries": 1}
        ],
        "routing": {
            "fallbacks": {SMOLLM2_ID: [DEEPSEEK_ID, CLOUD_ID], DEEPSEEK_ID: [SMOLLM2_ID, CLOUD_ID]},
            "cloud_models": [
                {
                    "provider": "standin",
                    "model": CLOUD_NAME,
                    "capabilities": ["chat", "completion", "json_schema"],
                    "context_length": 8192,
                    "size": "large",
                }
            ],
            "circuit": {"failure_threshold": 2, "cooldown_s": 5},
        },
        "server": {"port": port, "metrics_export_port": metrics_port, "dashboard_port": dashboard_port},
        # these tests repeat greedy requests to watch the engines, fallback and circuits work on
        # each; the response cache is tested on the two-replica graph (tests/e2e/conftest.py)
        "response_cache": {"enabled": False},
        "limits": {
            "first_token_timeout_s": 60, "health_check_period_s": 2, "max_body_bytes": 65536,
            "max_ongoing_requests": MAX_ONGOING, "default_max_tokens": DEFAULT_MAX_TOKENS,
        },
    }


@pytest.fixture(scope="session")
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    graph_store: LocalModelManager, cloud_standin: Standin,
) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("e2e")
    hf_token = f"hf_{secrets.token_hex(16)}"
    port, metrics_port, dashboard_port = (free_port() for _ in range(3))
    config = work / "turnout.yaml"
    config.write_text(yaml.safe_dump(e2e_config(cloud_standin.base_url, port, metrics_port, dashboard_port)))
    turnout = start(
        [str(REPO / ".venv" / "bin" / "turnout"), "serve", "--config", str(config)],
        work / "turnout.log",
        env={**GRAPH_ENV, CLOUD_KEY_ENV: cloud_standin.api_key, "TURNOUT_HOME": str(graph_store.root),
             "HF_TOKEN": hf_token},
    )
    base_url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if turnout.process.poll() is None:
            code = turnout.stop(signal.SIGINT)
            # Ctrl-C must shut the graph and Ray down cleanly.
            assert code == 0, f"turnout serve exited with {code} on SIGINT:\n{turnout.tail()}"

    stop_after_last_use(request, "deployment", stop)
    try:
        startup = wait_until(turnout, lambda: _serving(turnout, base_url), 600)
        yield Deployment(
            turnout, base_url, f"http://127.0.0.1:{metrics_port}/metrics", cloud_standin.api_key, startup,
            graph_store, hf_token,
        )
    finally:
        stop()


def _serving(turnout: Server, base_url: str) -> bool:
    """``turnout serve`` announces itself once every deployment is up."""
    return "Turnout is serving" in turnout.log.read_text(errors="replace") and answers(f"{base_url}/ready")


