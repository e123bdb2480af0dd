"""No secret of the demo graph (the cloud stand-in's API key, the HF token in its environment;
ingress API keys when the graph has any) shows in the turnout log, Ray's session logs, the metrics
scrape, /v1/models or error bodies, after a run that uses the cloud, fails in several ways, and
sends wrong keys."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest

from engine.store.demo import SMOLLM2_ID
from tests.graph import CLOUD_ID, Deployment

pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Hello"}]


def test_secrets_never_show(deployment: Deployment, http: httpx.Client) -> None:
    api_keys = list(getattr(deployment, "api_keys", []))
    secrets = [s for s in (deployment.cloud_key, deployment.hf_token, *api_keys) if s]
    answers = [
        http.post("/v1/chat/completions", json={"model": CLOUD_ID, "messages": HELLO, "max_tokens": 4}),
        http.post("/v1/chat/completions", json={"model": CLOUD_ID, "messages": HELLO, "max_tokens": 4, "stream": True}),
        http.post("/v1/chat/completions", json={"model": CLOUD_ID, "messages": HELLO, "max_tokens": 10**6}),
        http.post("/v1/chat/completions", json={"model": CLOUD_ID, "messages": HELLO, "max_tokens": 4,
                                                "response_format": {"type": "json_schema"}}),  # ingress 400
        http.post("/v1/chat/completions", json={"model": "local/llama/nope", "messages": HELLO}),
        http.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}),
        http.get("/v1/models"),
        http.get(f"/v1/models/{CLOUD_ID}"),
        http.get("/ready"),
    ]
    assert answers[0].status_code == 200 and answers[0].json()["model"] == CLOUD_ID  # the key was used
    for wrong in (f"Bearer {deployment.cloud_key}", "Bearer sk-wrong", *(f"Bearer {k}x" for k in api_keys)):
        answers.append(httpx.post(f"{deployment.base_url}/v1/chat/completions", headers={"Authorization": wrong},
                                  json={"model": SMOLLM2_ID, "messages": HELLO, "max_tokens": 1}, timeout=120))
    haystacks = {
        "answers": "\n".join(f"{a.status_code} {a.headers} {a.text}" for a in answers),
        "metrics": httpx.get(deployment.metrics_url, timeout=30).text,
        "turnout log": deployment.server.log.read_text(errors="replace"),
    }
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}...) leaked into {where}"
    for log in _ray_session_logs():  # replicas, proxy, controller, raylet, GCS, dashboard
        data = log.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret ({secret[:6]}...) leaked into {log}"


def _ray_session_logs() -> list[Path]:
    logs = Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs"
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert files, f"no Ray logs under {logs}"
    return files
