"""The RayService the chart renders: the Serve config is Turnout's own schema, in the shape
``turnout build-config`` writes, and the cluster has the GPUs, placement and volumes asked for."""

from __future__ import annotations

from typing import Any

import pytest

from service.cli.serve import serve_config
from service.config import TurnoutConfig
from service.serve_overrides.environment import FAST_SERVE_ENV
from tests.deploy.chart import Rendered


@pytest.fixture(autouse=True)
def pod_environment(rendered: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the pods get from the chart's Secret, which TurnoutConfig reads keys from."""
    for secret in rendered.kind("Secret"):
        for name, value in secret.get("stringData", {}).items():
            monkeypatch.setenv(name, value)


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"]["containers"]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_serve_config_has_the_shape_of_build_config(rendered: Rendered) -> None:
    served = rendered.serve_config
    config = TurnoutConfig(**served["applications"][0]["args"]["turnout"])
    # In pods the proxies take traffic from the Service: `turnout build-config --host 0.0.0.0`.
    expected = serve_config(config.model_copy(update={"server": config.server.model_copy(update={"host": "0.0.0.0"})}))
    (app,), (want,) = served.pop("applications"), expected.pop("applications")
    assert served == expected
    assert {k: v for k, v in app.items() if k != "args"} == {k: v for k, v in want.items() if k != "args"}
    assert app["import_path"] == "service.graph:app_builder"


def test_serve_args_are_the_turnout_values(rendered: Rendered) -> None:
    args = rendered.serve_config["applications"][0]["args"]["turnout"]
    assert args == rendered.values["turnout"]
    assert TurnoutConfig(**args) == TurnoutConfig(**rendered.values["turnout"])


def test_head_has_no_gpu_and_workers_get_the_gpus_asked_for(rendered: Rendered) -> None:
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    (head,) = _containers(cluster["headGroupSpec"]["template"])
    assert "nvidia.com/gpu" not in str(head.get("resources"))
    groups = cluster.get("workerGroupSpecs", [])
    assert [g["groupName"] for g in groups] == [g["name"] for g in rendered.values["workerGroups"]]
    for group, wanted in zip(groups, rendered.values["workerGroups"]):
        (worker,) = _containers(group["template"])
        gpus = wanted.get("gpus", 0)
        assert worker["resources"]["limits"].get("nvidia.com/gpu", 0) == gpus
        assert worker["resources"]["requests"].get("nvidia.com/gpu", 0) == gpus
        assert (group["minReplicas"], group["maxReplicas"]) == (wanted["minReplicas"], wanted["maxReplicas"])
        for key in ("nodeSelector", "tolerations", "affinity"):
            assert group["template"]["spec"].get(key) == (wanted.get(key) or None)


def test_every_model_fits_a_worker_group(rendered: Rendered) -> None:
    gpus = [g.get("gpus", 0) for g in rendered.values["workerGroups"]]
    for model in TurnoutConfig(**rendered.values["turnout"]).models:
        needed = max(model.num_gpus, model.engine.tensor_parallel_size)
        if rendered.values["platform"] == "cuda":
            assert any(g >= needed for g in gpus), f"{model.id} needs {needed} GPUs in one pod"
            assert model.num_gpus == model.engine.tensor_parallel_size
        else:
            assert gpus == [0] * len(gpus) and model.num_gpus == 0


def test_every_pod_sees_the_platform_and_the_model_cache(rendered: Rendered) -> None:
    mount = rendered.values["modelCache"]["mountPath"]
    for template in rendered.pod_templates():
        (container,) = _containers(template)
        env = _env(container)
        assert env["TURNOUT_PLATFORM"] == rendered.values["platform"]
        assert env["TURNOUT_HOME"].startswith(f"{mount}/") and env["HF_HOME"].startswith(f"{mount}/")
        assert {"name": "model-cache", "mountPath": mount} in container["volumeMounts"]
        (cache,) = [v for v in template["spec"]["volumes"] if v["name"] == "model-cache"]
        claim = rendered.values["modelCache"]["existingClaim"] or (
            rendered.values["modelCache"]["create"] and f"{rendered.rayservice['metadata']['name']}-model-cache"
        )
        assert cache.get("persistentVolumeClaim", {}).get("claimName") == (claim or None)
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container.get("readinessProbe") and container.get("livenessProbe")


def test_every_ray_process_runs_serves_high_throughput_mode(rendered: Rendered) -> None:
    """HAProxy and the throughput settings are read by Ray's processes at start: on every pod."""
    haproxy = (rendered.values["turnout"].get("server") or {}).get("haproxy", True)
    for template in rendered.pod_templates():
        (container,) = _containers(template)
        env = _env(container)
        expected = FAST_SERVE_ENV if haproxy else {}
        assert {k: env[k] for k in env if k.startswith("RAY_SERVE_")} == expected


def test_the_api_service_and_ingress_reach_the_serve_port(rendered: Rendered) -> None:
    name = rendered.rayservice["metadata"]["name"]
    (service,) = [s for s in rendered.kind("Service") if s["metadata"]["name"] == name]
    assert service["spec"]["selector"]["ray.io/serve"] == "true"
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == rendered.serve_config["http_options"]["port"]
    for ingress in rendered.kind("Ingress"):
        backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        assert backends and all(b == {"name": name, "port": {"number": port["port"]}} for b in backends)


def test_notes_tell_how_to_reach_the_api_and_the_ray_dashboard(rendered: Rendered) -> None:
    name = rendered.rayservice["metadata"]["name"]
    assert f"svc/{name}-head-svc 8265:8265" in rendered.notes
    assert f"svc/{name} 8000:" in rendered.notes or "https://" in rendered.notes
    assert "/v1" in rendered.notes


def test_high_throughput_mode_can_be_turned_off(chart) -> None:
    from tests.deploy.chart import render

    off = render(chart, {"turnout": {"server": {"haproxy": False}}})
    for template in off.pod_templates():
        (container,) = _containers(template)
        assert not any(k.startswith("RAY_SERVE_") for k in _env(container))
