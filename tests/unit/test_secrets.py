"""No secret (cloud API key, HF token, ingress API keys) shows in logs, error bodies, metrics,
/v1/models or the serve config, during a run that uses every one of them, failures included."""

from __future__ import annotations

import logging

import httpx
import pytest
import yaml

from router.providers import CloudProviderSettings, OpenAICompatibleProvider
from service.api.app import create_app
from service.backends.cloud import CloudBackend
from service.cli.serve import serve_config
from service.config import AuthSettings, TurnoutConfig
from testkit.fakes import CLOUD, NANO, build_gateway, router_settings
from tests.scripted_upstream import Hang, Reply, ScriptedUpstream, Stream

CLOUD_KEY = "sk-cloud-LEAKCHECK-4a9f2c7e1b"
HF_TOKEN = "hf_LEAKCHECK_7d3e9a1c5b2f"
API_KEYS = ["sk-turnout-LEAKCHECK-one", "sk-turnout-LEAKCHECK-two"]
SECRETS = [CLOUD_KEY, HF_TOKEN, *API_KEYS]
HELLO = [{"role": "user", "content": "hi"}]


def config(upstream: ScriptedUpstream) -> TurnoutConfig:
    provider = {"name": "acme", "base_url": upstream.base_url, "api_key_env": "LEAKCHECK_CLOUD_KEY",
                "max_retries": 1, "backoff_initial_s": 0.01, "backoff_max_s": 0.02,
                "timeout_s": 0.3, "first_token_timeout_s": 0.3}
    return TurnoutConfig(models=[], cloud_providers=[provider], auth=AuthSettings(api_keys=API_KEYS))


def requests(key: str) -> list[tuple[str, str, dict | None, dict[str, str]]]:
    """Every kind of request: each key, a wrong key, no key, cloud failures and successes."""
    auth = {"Authorization": f"Bearer {key}"}
    chat = {"model": CLOUD, "messages": HELLO}
    return [
        ("POST", "/v1/chat/completions", chat, auth),  # upstream 401 echoing our key: fallback
        ("POST", "/v1/chat/completions", chat, auth),  # upstream 400 echoing it: passed on, scrubbed
        ("POST", "/v1/chat/completions", {**chat, "stream": True}, auth),  # upstream 500 then hang
        ("POST", "/v1/chat/completions", {**chat, "stream": True}, auth),  # cut mid-stream
        ("POST", "/v1/chat/completions", chat, auth),  # served by the cloud
        ("POST", "/v1/chat/completions", {"model": "local/llama/nope", "messages": HELLO}, auth),
        ("POST", "/v1/chat/completions", chat, {"Authorization": f"Bearer {key}x"}),
        ("POST", "/v1/chat/completions", chat, {"Authorization": key}),
        ("POST", "/v1/chat/completions", chat, {}),
        ("GET", "/v1/models", None, auth),
        ("GET", f"/v1/models/{CLOUD}", None, auth),
        ("GET", "/ready", None, {}),
    ]


@pytest.fixture
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("LEAKCHECK_CLOUD_KEY", CLOUD_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)


async def test_no_secret_leaks_anywhere(secrets_in_env, caplog):
    caplog.set_level(logging.DEBUG)
    script = [Reply(401, echo=True), Reply(400, echo=True), Reply(500, echo=True), Hang(), Stream(cut=True), Reply()]
    async with ScriptedUpstream(script) as upstream:
        cfg = config(upstream)
        stack = build_gateway(router_settings(fallbacks={CLOUD: [NANO]}))
        provider = OpenAICompatibleProvider(cfg.cloud_providers[0])
        stack.gateway.backends[CLOUD] = CloudBackend(stack.gateway.router.target(CLOUD), provider)
        app = create_app(stack.gateway, cfg)
        seen = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for key in API_KEYS:
                for method, path, body, headers in requests(key):
                    response = await client.request(method, path, json=body, headers=headers)
                    seen.append(f"{response.status_code} {response.headers} {response.text}")
        await stack.gateway.probe_health()
        await provider.close()
    assert any(f"Bearer {CLOUD_KEY}" == s.headers["authorization"] for s in upstream.posts)  # it was used
    assert any(line.startswith("401") for line in seen)
    haystacks = {
        "responses": "\n".join(seen),
        "logs": "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records),
        "metrics": repr({name: m.calls for name, m in stack.recorder.by_name.items()}),
        "serve config": yaml.safe_dump(serve_config(cfg)),
        "config": f"{cfg!r} {cfg.model_dump_json()} {CloudProviderSettings.model_validate(cfg.cloud_providers[0])!r}",
    }
    assert "upstream answered 400: scripted 400 for Bearer [redacted]" in haystacks["responses"]
    for where, text in haystacks.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret[:12]}... leaked into {where}"
