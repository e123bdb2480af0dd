"""The one configuration schema: demo default, YAML file, environment overrides, validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from engine.errors import ConfigError
from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from service.config import TurnoutConfig, load_config

MODEL = "local/llama/tiny"
PROVIDER = {"name": "acme", "base_url": "https://api.acme.test/v1"}
CLOUD_MODEL = {"provider": "acme", "model": "big", "capabilities": ["chat"], "context_length": 8192}


@pytest.fixture(autouse=True)
def no_turnout_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TURNOUT_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def config_error(tmp_path: Path, data) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    return info.value.message


def test_no_file_gives_the_three_demo_models():
    config = load_config(None)
    assert [m.id for m in config.models] == [SMOLLM2_ID, DEEPSEEK_ID, MINILM_ID]
    assert config.routing.fallbacks[SMOLLM2_ID] == [DEEPSEEK_ID]
    assert config.server.port == 8000
    assert config.auth.keys() == []


def test_a_valid_file(tmp_path):
    data = {
        "models": [{"id": MODEL, "replicas": 2, "engine": {"max_model_len": 1024}}],
        "cloud_providers": [PROVIDER],
        "routing": {"cloud_models": [CLOUD_MODEL], "fallbacks": {MODEL: ["cloud/acme/big"]}},
        "limits": {"max_tokens_cap": 512},
        "auth": {"api_keys": ["sk-1"]},
    }
    config = load_config(write(tmp_path, data))
    assert config.models[0].replicas == 2
    assert config.models[0].engine.max_model_len == 1024
    assert config.limits.max_tokens_cap == 512
    assert config.auth.keys() == ["sk-1"]
    assert "sk-1" not in repr(config)


def test_an_empty_file_is_an_empty_configuration(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path).models == []


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"models": [{"id": MODEL, "replicas": 0}]}, "models.0.replicas"),
        ({"models": [{"id": MODEL}, {"id": MODEL, "engine": {"dtype": "int3"}}]}, "models.1.engine.dtype"),
        ({"models": [{"id": "llama/tiny"}]}, "models.0"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"limits": {"max_body_bytes": 10}}, "limits.max_body_bytes"),
        ({"routing": {"policy": "random"}}, "routing.policy"),
    ],
)
def test_an_invalid_field_is_named(tmp_path, data, field):
    message = config_error(tmp_path, data)
    assert f"  {field}" in message
    assert str(tmp_path / "turnout.yaml") in message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"modles": []}, "modles"),
        ({"server": {"prot": 1}}, "server.prot"),
        ({"models": [{"id": MODEL, "gpus": 1}]}, "models.0.gpus"),
        ({"models": [{"id": MODEL, "engine": {"kv_cache": 1}}]}, "models.0.engine.kv_cache"),
    ],
)
def test_unknown_keys_are_rejected(tmp_path, data, field):
    assert f"  {field}: Extra inputs are not permitted" in config_error(tmp_path, data)


def test_environment_wins_over_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, {"server": {"port": 8001, "host": "0.0.0.0"}})
    monkeypatch.setenv("TURNOUT_SERVER__PORT", "9001")
    config = load_config(path)
    assert config.server.port == 9001
    assert config.server.host == "0.0.0.0"  # the rest of the file's section is kept


def test_environment_overrides_the_demo_default(monkeypatch):
    monkeypatch.setenv("TURNOUT_LIMITS__MAX_TOKENS_CAP", "64")
    config = load_config(None)
    assert config.limits.max_tokens_cap == 64
    assert len(config.models) == 3


def test_api_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("TURNOUT_AUTH__API_KEYS", '["sk-env"]')
    assert load_config(None).auth.keys() == ["sk-env"]


def test_an_invalid_environment_value_is_named(monkeypatch):
    monkeypatch.setenv("TURNOUT_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError) as info:
        load_config(None)
    assert "server.port" in info.value.message


def test_duplicate_model_ids_are_rejected(tmp_path):
    message = config_error(tmp_path, {"models": [{"id": MODEL}, {"id": MODEL}]})
    assert "duplicate model ids" in message


def test_a_cloud_model_of_an_unknown_provider_is_rejected(tmp_path):
    message = config_error(tmp_path, {"routing": {"cloud_models": [CLOUD_MODEL]}})
    assert "routing.cloud_models" in message and "acme" in message


def test_a_cloud_model_of_a_declared_provider_is_accepted(tmp_path):
    data = {"cloud_providers": [PROVIDER], "routing": {"cloud_models": [CLOUD_MODEL]}}
    assert load_config(write(tmp_path, data)).routing.cloud_models[0].model == "big"


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert info.value.param == "config"


@pytest.mark.parametrize("text", ["- a\n- b\n", "models: [\n"])
def test_a_file_that_is_not_a_mapping_is_a_config_error(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.param == "config"


def test_direct_construction_validates_too():
    with pytest.raises(ValueError):
        TurnoutConfig(models=[{"id": MODEL}, {"id": MODEL}])
