"""The demo graph for end-to-end tests, started once per session with the real ``turnout serve``.

Beside it, vLLM's own OpenAI server stands in for a cloud provider (the same SmolLM2 checkpoint,
served under another name, with an API key). Both run on loopback; the tests talk HTTP to them.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import yaml

from engine.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from engine.protocol import ModelRecord
from engine.store import LocalModelManager
from tests.servers import REPO, Server, answers, free_port, start, vllm_server_command, wait_until

CLOUD_NAME = "smollm2-standin"
CLOUD_ID = f"cloud/standin/{CLOUD_NAME}"
CLOUD_KEY_ENV = "TURNOUT_E2E_CLOUD_KEY"
DEEPSEEK_CONTEXT = 2048
DEFAULT_MAX_TOKENS = 128  # what a local model generates for a request without max_tokens
MAX_ONGOING = 64  # the ingress's limit (Parlant starts ~30 requests at once); test_overload goes past it


@dataclass
class Deployment:
    """The running graph: its API, metrics endpoint, process and the cloud stand-in's key."""

    server: Server
    base_url: str
    metrics_url: str
    cloud_key: str
    startup_s: float
    hf_token: str = ""  # in the graph's environment (unused offline): it must never show either

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=180)


def e2e_config(cloud_port: int, port: int, metrics_port: int, dashboard_port: int) -> dict:
    """Demo models, a cloud fallback, a fast circuit breaker, quick health probes, no response cache."""
    return {
        "models": [
            {"id": SMOLLM2_ID, "engine": {"cpu_threads_bind": "0"}},
            {"id": DEEPSEEK_ID, "engine": {"cpu_threads_bind": "1", "max_model_len": DEEPSEEK_CONTEXT}},
            {"id": MINILM_ID, "engine": {"cpu_threads_bind": "1"}},
        ],
        "cloud_providers": [
            {
                "name": "standin",
                "base_url": f"http://127.0.0.1:{cloud_port}/v1",
                "api_key_env": CLOUD_KEY_ENV,
                "max_retries": 1,
            }
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
        # each; the response cache has its own graph (tests/e2e/test_caching.py)
        "response_cache": {"enabled": False},
        "limits": {
            "first_token_timeout_s": 20, "health_check_period_s": 2, "max_body_bytes": 65536,
            "max_ongoing_requests": MAX_ONGOING, "default_max_tokens": DEFAULT_MAX_TOKENS,
        },
    }


@pytest.fixture(scope="session")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, demo_store: LocalModelManager, smollm2_record: ModelRecord
) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("e2e")
    key, hf_token = secrets.token_hex(16), f"hf_{secrets.token_hex(16)}"
    cloud_port, port, metrics_port, dashboard_port = (free_port() for _ in range(4))
    cloud = start(
        vllm_server_command(smollm2_record.path, CLOUD_NAME, cloud_port, key),
        work / "cloud.log", env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"},
    )
    config = work / "turnout.yaml"
    config.write_text(yaml.safe_dump(e2e_config(cloud_port, port, metrics_port, dashboard_port)))
    turnout = start(
        [str(REPO / ".venv" / "bin" / "turnout"), "serve", "--config", str(config)],
        work / "turnout.log",
        env={CLOUD_KEY_ENV: key, "TURNOUT_HOME": str(demo_store.root), "HF_TOKEN": hf_token},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(cloud, lambda: answers(f"http://127.0.0.1:{cloud_port}/health"), 400)
        startup = wait_until(turnout, lambda: _serving(turnout, base_url), 600)
        yield Deployment(turnout, base_url, f"http://127.0.0.1:{metrics_port}/metrics", key, startup, hf_token)
    finally:
        code = turnout.stop(signal.SIGINT)
        cloud.stop(signal.SIGTERM)
    # Ctrl-C must shut the graph and Ray down cleanly.
    assert code == 0, f"turnout serve exited with {code} on SIGINT:\n{turnout.tail()}"


def _serving(turnout: Server, base_url: str) -> bool:
    """``turnout serve`` announces itself once every deployment is up."""
    return "Turnout is serving" in turnout.log.read_text(errors="replace") and answers(f"{base_url}/ready")


