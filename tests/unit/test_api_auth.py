"""Ingress API keys (env, file, exact constant-time match, every key compared) and CORS."""

from __future__ import annotations

import hmac
import json

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.guards import OPEN_PATHS
from service.config import AuthSettings, ServerSettings, TurnoutConfig
from testkit.fakes import NANO, build_gateway

KEYS = ["sk-first-0123456789", "sk-second-abcdefgh", "sk-third-ZYXWVUT"]
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
ORIGIN = "https://app.example"


def client_for(config: TurnoutConfig) -> TestClient:
    return TestClient(create_app(build_gateway().gateway, config))


@pytest.fixture
def client() -> TestClient:
    return client_for(TurnoutConfig(models=[], auth=AuthSettings(api_keys=KEYS)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_several_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("TURNOUT_AUTH__API_KEYS", json.dumps(KEYS[:2]))
    client = client_for(TurnoutConfig(models=[]))
    for key in KEYS[:2]:
        assert client.post("/v1/chat/completions", json=HELLO, headers=bearer(key)).status_code == 200
    assert client.post("/v1/chat/completions", json=HELLO, headers=bearer(KEYS[2])).status_code == 401


def test_keys_from_the_environment_and_a_file_together(monkeypatch, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEYS[2]}\n")
    monkeypatch.setenv("TURNOUT_AUTH__API_KEYS", json.dumps([KEYS[0]]))
    monkeypatch.setenv("TURNOUT_AUTH__API_KEYS_FILE", str(keys))
    client = client_for(TurnoutConfig(models=[]))
    assert client.get("/v1/models", headers=bearer(KEYS[0])).status_code == 200
    assert client.get("/v1/models", headers=bearer(KEYS[2])).status_code == 200
    assert client.get("/v1/models", headers=bearer(KEYS[1])).status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        f"Token {KEYS[0]}", f"Basic {KEYS[0]}", KEYS[0], "Bearer", "Bearer ", f"Bearer  {KEYS[0]}",
        f"Bearer {KEYS[0]}\t", f"Bearer {KEYS[0]} x", f"Bearer {KEYS[0][:-1]}", f"Bearer {KEYS[0]}9",
        f"Bearer {KEYS[0].upper()}", f"Bearer {KEYS[0]},{KEYS[1]}",
    ],
    ids=lambda header: repr(header.replace(KEYS[0], "KEY")),
)
def test_anything_but_an_exact_key_is_401(client, authorization):
    response = client.post("/v1/chat/completions", json=HELLO, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("GET", f"/v1/models/{NANO}"), ("POST", "/v1/chat/completions"),
     ("POST", "/v1/completions"), ("POST", "/v1/embeddings"), ("POST", "/v1/moderations"),
     ("POST", "/tokenize"), ("GET", "/redoc"), ("GET", "/metrics"), ("GET", "/nothing/here")],
)
def test_every_other_path_is_closed_even_unknown_ones(client, method, path):
    assert client.request(method, path, json=HELLO).status_code == 401


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_probes_and_the_api_description_are_open(client, path):
    assert client.get(path).status_code == 200


def test_every_key_is_compared_in_constant_time(client, monkeypatch):
    compared, real = [], hmac.compare_digest

    def counting(token: bytes, key: bytes) -> bool:
        compared.append(key)
        return real(token, key)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for token in (KEYS[0], "sk-wrong"):
        compared.clear()
        client.get("/v1/models", headers=bearer(token))
        assert compared == [k.encode() for k in KEYS]  # no early exit on a match


def test_cors_is_off_by_default(client):
    preflight = client.options(
        "/v1/chat/completions", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = client.get("/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_answers_configured_origins_only():
    config = TurnoutConfig(models=[], server=ServerSettings(cors_origins=[ORIGIN]))
    client = client_for(config)
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    preflight = client.options("/v1/chat/completions", headers={"Origin": ORIGIN, **asked})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    other = client.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **asked})
    assert "access-control-allow-origin" not in other.headers
    answer = client.get("/health", headers={"Origin": ORIGIN})
    exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert {"x-turnout-route", "x-turnout-model", "x-turnout-cache"} <= exposed
