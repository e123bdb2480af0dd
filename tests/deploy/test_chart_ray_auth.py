"""The Ray cluster's token: one Secret holds it under auth_token; KubeRay's authOptions name that
Secret (or, with via=env, every Ray container reads RAY_AUTH_TOKEN from it); its value appears
nowhere else; an installed Secret keeps its token on upgrade."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import helm_python
import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    Rendered,
    kubernetes_errors,
    rayservice_errors,
    render,
)

TOKEN = "ray-token-never-in-config-0123456789abcdef"
TWO_GROUPS = [
    {"name": "a", "replicas": 1, "minReplicas": 1, "maxReplicas": 1, "gpus": 1},
    {"name": "b", "replicas": 1, "minReplicas": 1, "maxReplicas": 2, "gpus": 1},
]


def _token_secrets(rendered: Rendered) -> list[dict]:
    return [s for s in rendered.kind("Secret") if "auth_token" in s.get("data", {}) | s.get("stringData", {})]


def _token(secret: dict) -> str:
    return base64.b64decode(secret["data"]["auth_token"]).decode()


def _auth_options(rendered: Rendered) -> dict | None:
    return rendered.rayservice["spec"]["rayClusterConfig"].get("authOptions")


def _auth_env(container: dict) -> list[dict]:
    return [e for e in container.get("env", []) if e["name"].startswith("RAY_AUTH")]


def test_by_default_the_chart_makes_a_token_and_authoptions_name_its_secret(chart: helm_python.Chart) -> None:
    rendered = render(chart, {})
    (secret,) = _token_secrets(rendered)
    assert secret["metadata"]["name"] == f"{rendered.fullname}-ray-auth"
    token = _token(secret)
    assert len(token) == 48 and token.isalnum()
    assert _token(_token_secrets(render(chart, {}))[0]) != token  # a new one per install
    assert _auth_options(rendered) == {"mode": "token", "secretName": secret["metadata"]["name"]}
    assert not rayservice_errors(rendered.rayservice)
    # KubeRay sets the variables from authOptions; setting them too would shadow its own.
    assert [_auth_env(c) for c in rendered.ray_containers()] == [[]] * len(rendered.ray_containers())


def test_with_via_env_every_ray_container_reads_the_token_from_the_secret(chart: helm_python.Chart) -> None:
    rendered = render(chart, {"workerGroups": TWO_GROUPS, "rayAuth": {"via": "env"}})
    (secret,) = _token_secrets(rendered)
    assert _auth_options(rendered) is None
    ref = {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "auth_token"}}
    expected = [{"name": "RAY_AUTH_MODE", "value": "token"}, {"name": "RAY_AUTH_TOKEN", "valueFrom": ref}]
    containers = rendered.ray_containers()
    assert len(containers) == 3 and [_auth_env(c) for c in containers] == [expected] * 3
    templates = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": t}
        for i, t in enumerate(rendered.pod_templates())
    ]
    assert not [e for e in map(kubernetes_errors, templates) if e]
    assert not rayservice_errors(rendered.rayservice)


@pytest.mark.parametrize("via", ["authOptions", "env"])
def test_a_given_token_is_in_the_secret_and_nowhere_else(chart: helm_python.Chart, via: str) -> None:
    rendered = render(chart, {"rayAuth": {"token": TOKEN, "via": via}})
    (secret,) = _token_secrets(rendered)
    assert _token(secret) == TOKEN and not kubernetes_errors(secret)
    others = yaml.safe_dump_all([o for o in rendered.objects if o is not secret]) + rendered.notes
    for form in (TOKEN, secret["data"]["auth_token"]):
        assert form not in others
    assert TOKEN not in rendered.rayservice["spec"]["serveConfigV2"]


@pytest.mark.parametrize("via", ["authOptions", "env"])
def test_an_existing_secret_is_used_and_none_is_created(chart: helm_python.Chart, via: str) -> None:
    rendered = render(chart, {"workerGroups": TWO_GROUPS, "rayAuth": {"existingSecret": "team-ray-token", "via": via}})
    assert _token_secrets(rendered) == []
    if via == "authOptions":
        assert _auth_options(rendered) == {"mode": "token", "secretName": "team-ray-token"}
    else:
        tokens = [e for c in rendered.ray_containers() for e in _auth_env(c) if e["name"] == "RAY_AUTH_TOKEN"]
        assert [e["valueFrom"]["secretKeyRef"] for e in tokens] == [{"name": "team-ray-token", "key": "auth_token"}] * 3
    assert "get secret team-ray-token -o jsonpath='{.data.auth_token}' | base64 -d" in rendered.notes


def test_turned_off_there_is_no_token(chart: helm_python.Chart) -> None:
    rendered = render(chart, {"rayAuth": {"enabled": False, "via": "env"}})
    assert _token_secrets(rendered) == [] and _auth_options(rendered) is None
    assert not any(_auth_env(c) for c in rendered.ray_containers())
    assert "auth_token" not in rendered.notes


def test_notes_tell_how_to_read_the_token_and_give_it_to_the_dashboard(chart: helm_python.Chart) -> None:
    rendered = render(chart, {})
    name = rendered.fullname
    read = f"kubectl -n {NAMESPACE} get secret {name}-ray-auth -o jsonpath='{{.data.auth_token}}' | base64 -d"
    assert f"port-forward svc/{name}-head-svc 8265:8265" in rendered.notes and read in rendered.notes
    assert "ray-authentication-token" in rendered.notes and "RAY_AUTH_MODE=token" in rendered.notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rayAuth": {"token": TOKEN, "existingSecret": "team-ray-token"}}, "set token or existingSecret, not both"),
        ({"rayVersion": "2.51.0"}, "rayAuth needs Ray 2.52.0 or later (rayVersion is 2.51.0)"),
    ],
)
def test_settings_the_cluster_would_reject_fail_the_render(chart: helm_python.Chart, values: dict, message: str):
    with pytest.raises(helm_python.HelmRenderError) as info:
        chart.render(values, name="llm")
    assert message in str(info.value)


def test_an_installed_secret_keeps_its_token_unless_one_is_given(tmp_path: Path) -> None:
    """The helper the Secret's template calls with `lookup`'s result, which offline renders leave empty."""
    (tmp_path / "templates").mkdir()
    shutil.copy(CHART / "templates" / "_helpers.tpl", tmp_path / "templates")
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (tmp_path / "values.yaml").write_text("rayAuth: {token: ''}\n")
    (tmp_path / "templates" / "probe.yaml").write_text(
        '{{- $installed := dict "data" (dict "auth_token" ("kept-token" | b64enc)) }}\n'
        'kept: {{ include "turnout.rayAuthTokenData" (dict "root" . "existing" $installed) | b64dec }}\n'
        'fresh: {{ include "turnout.rayAuthTokenData" (dict "root" . "existing" (dict)) | b64dec }}\n'
    )
    with helm_python.Chart.load(tmp_path) as probe:
        upgraded = yaml.safe_load(probe.render({}, name="llm")["probe/templates/probe.yaml"])
        rotated = yaml.safe_load(probe.render({"rayAuth": {"token": TOKEN}}, name="llm")["probe/templates/probe.yaml"])
    assert upgraded["kept"] == "kept-token"
    assert len(upgraded["fresh"]) == 48 and upgraded["fresh"].isalnum()
    assert rotated == {"kept": TOKEN, "fresh": TOKEN}
