"""Secret values reach the pods only through a Kubernetes Secret, as environment variables."""

from __future__ import annotations

import helm_python
import yaml

from tests.deploy.chart import Rendered, render

HF_TOKEN = "hf_never_in_config_0123456789"
API_KEY = "sk-turnout-never-in-config"
PROVIDER_KEY = "sk-provider-never-in-config"
VALUES = {
    "secrets": {"hfToken": HF_TOKEN, "apiKeys": [API_KEY], "cloudApiKeys": {"ACME_KEY": PROVIDER_KEY}},
    "turnout": {
        "cloud_providers": [{"name": "acme", "base_url": "https://api.acme.test/v1", "api_key_env": "ACME_KEY"}],
        "auth": {"api_keys_file": "/etc/turnout/keys"},
    },
}


def _env_from(rendered: Rendered) -> list[list[dict]]:
    return [c.get("envFrom", []) for t in rendered.pod_templates() for c in t["spec"]["containers"]]


def _app_secrets(rendered: Rendered) -> list[dict]:
    """The Secrets that become environment variables (not the Ray token's, test_chart_ray_auth.py)."""
    return [s for s in rendered.kind("Secret") if s["metadata"]["name"] != f"{rendered.fullname}-ray-auth"]


def test_created_secret_holds_the_values_and_nothing_else_does(chart: helm_python.Chart):
    rendered = render(chart, VALUES)
    (secret,) = _app_secrets(rendered)
    assert secret["stringData"] == {
        "HF_TOKEN": HF_TOKEN, "TURNOUT_AUTH__API_KEYS": f'["{API_KEY}"]', "ACME_KEY": PROVIDER_KEY,
    }
    others = yaml.safe_dump_all([o for o in rendered.objects if o is not secret]) + rendered.notes
    for value in (HF_TOKEN, API_KEY, PROVIDER_KEY):
        assert value not in others
    turnout = rendered.serve_config["applications"][0]["args"]["turnout"]
    assert turnout["cloud_providers"][0]["api_key_env"] == "ACME_KEY"  # the name, read on the cluster
    ref = [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert _env_from(rendered) == [ref] * len(rendered.pod_templates())


def test_an_existing_secret_is_used_and_none_is_created(chart: helm_python.Chart):
    values = {**VALUES, "secrets": {"existingSecret": "team-llm-keys", "hfToken": HF_TOKEN}}
    rendered = render(chart, values)
    assert _app_secrets(rendered) == []
    assert HF_TOKEN not in yaml.safe_dump_all(rendered.objects)
    assert _env_from(rendered) == [[{"secretRef": {"name": "team-llm-keys"}}]] * len(rendered.pod_templates())


def test_no_secret_values_means_no_secret(chart: helm_python.Chart):
    rendered = render(chart, {"secrets": {"hfToken": ""}})
    assert _app_secrets(rendered) == []
    assert _env_from(rendered) == [[]] * len(rendered.pod_templates())
