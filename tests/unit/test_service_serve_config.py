"""``turnout build-config``: the Ray Serve config built from a Turnout configuration."""

from __future__ import annotations

import os

import pytest
import yaml

from service.cli.serve import serve_config
from service.config import TurnoutConfig, load_config

KEY = "sk-never-in-serve-config"
PROVIDER_KEY = "sk-provider-secret"


@pytest.fixture(autouse=True)
def no_turnout_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TURNOUT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(monkeypatch, tmp_path) -> TurnoutConfig:
    monkeypatch.setenv("ACME_KEY", PROVIDER_KEY)
    keys = tmp_path / "keys"
    keys.write_text("sk-from-file\n")
    data = {
        "models": [{"id": "local/llama/tiny", "replicas": 2}],
        "cloud_providers": [{"name": "acme", "base_url": "https://api.acme.test/v1", "api_key_env": "ACME_KEY"}],
        "routing": {"cloud_models": [{"provider": "acme", "model": "big", "capabilities": ["chat"], "context_length": 8192}]},
        "server": {"port": 9100},
        "auth": {"api_keys": [KEY], "api_keys_file": str(keys)},
    }
    return TurnoutConfig(**data)


def test_one_application_built_by_the_graph_builder(config):
    serve = serve_config(config)
    (app,) = serve["applications"]
    assert app["import_path"] == "service.graph:app_builder"
    assert app["route_prefix"] == "/"
    assert serve["http_options"]["port"] == 9100
    assert app["args"]["turnout"]["models"][0]["replicas"] == 2


def test_api_keys_never_appear(config):
    text = yaml.safe_dump(serve_config(config), sort_keys=False)
    assert KEY not in text
    assert PROVIDER_KEY not in text
    assert "sk-from-file" not in text
    assert "ACME_KEY" in text  # the variable's name, read again on the cluster


def test_the_args_rebuild_the_same_configuration(config):
    turnout = yaml.safe_load(yaml.safe_dump(serve_config(config)))["applications"][0]["args"]["turnout"]
    rebuilt = TurnoutConfig(**turnout)
    assert rebuilt.models == config.models
    assert rebuilt.routing == config.routing
    assert rebuilt.server == config.server
    assert rebuilt.auth.api_keys == []
    assert rebuilt.auth.keys() == ["sk-from-file"]  # the key file is named, not copied


def test_the_demo_configuration_round_trips():
    config = load_config(None)
    turnout = yaml.safe_load(yaml.safe_dump(serve_config(config)))["applications"][0]["args"]["turnout"]
    assert TurnoutConfig(**turnout).models == config.models


def test_the_proxies_bind_where_the_config_says_and_build_config_can_open_them(config, tmp_path):
    from typer.testing import CliRunner

    from service.cli.app import app

    assert serve_config(config)["http_options"]["host"] == "127.0.0.1"  # server.host's default
    file = tmp_path / "turnout.yaml"
    file.write_text(yaml.safe_dump({"models": [{"id": "local/llama/tiny"}]}))
    out = tmp_path / "serve.yaml"
    result = CliRunner().invoke(app, ["build-config", "--config", str(file), "--host", "0.0.0.0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(out.read_text())
    assert written["http_options"]["host"] == "0.0.0.0"
    assert written["proxy_location"] == "EveryNode"


@pytest.mark.parametrize(
    ("address", "local"),
    [("127.0.0.1:6379", True), ("localhost:6379", True), ("ray://127.0.0.1:10001", True),
     ("10.0.0.5:6379", False), ("ray://head.example:10001", False), ("auto", False)],
)
def test_a_cluster_on_loopback_is_joined_on_loopback(address, local):
    from service.cli.serve import _on_loopback

    assert _on_loopback(address) is local


def test_the_banner_says_how_to_open_the_dashboard(monkeypatch):
    from service.cli.serve import token_hint

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert "ray get-auth-token" in token_hint()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret-token-value")
    assert "RAY_AUTH_TOKEN" in token_hint() and "secret-token-value" not in token_hint()
