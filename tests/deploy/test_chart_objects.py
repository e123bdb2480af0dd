"""Every rendered object is valid: Kubernetes kinds against Kubernetes' schemas, the RayService
against KubeRay's CRD schema, and the Prometheus operator's kinds structurally."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.chart import CHART, Rendered

KUBERNETES = "1.35.0"
# KubeRay's RayService CRD (ray.io/v1, KubeRay master of 2026-08-19), kept with the tests.
RAYSERVICE_CRD = Path(__file__).resolve().parent / "crds" / "ray.io_rayservices.yaml.gz"
NOT_IN_KUBERNETES = {"RayService", "PodMonitor", "ServiceMonitor"}


@pytest.fixture(scope="module")
def rayservice_schema() -> dict[str, Any]:
    crd = yaml.safe_load(gzip.decompress(RAYSERVICE_CRD.read_bytes()))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _no_unknown_fields(v1["schema"]["openAPIV3Schema"])


def _no_unknown_fields(schema: Any) -> Any:
    """The CRD schema as the API server's strict field validation applies it: unknown fields fail."""
    if isinstance(schema, list):
        return [_no_unknown_fields(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _no_unknown_fields(v) for k, v in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        strict.setdefault("additionalProperties", False)
    return strict


def _kubernetes_errors(obj: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{obj['kind']}/{obj['metadata']['name']}: {str(e).splitlines()[0]} at {list(e.path)}"
    return None


def test_kubernetes_objects_are_valid(rendered: Rendered) -> None:
    objects = [o for o in rendered.objects if o["kind"] not in NOT_IN_KUBERNETES]
    assert {"Service", "ConfigMap"} <= {o["kind"] for o in objects}
    errors = [e for e in map(_kubernetes_errors, objects) if e]
    assert not errors, errors


def test_pod_templates_are_valid_kubernetes(rendered: Rendered) -> None:
    """The head and worker templates, checked as PodTemplates (containers, probes, volumes)."""
    templates = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": t}
        for i, t in enumerate(rendered.pod_templates())
    ]
    errors = [e for e in map(_kubernetes_errors, templates) if e]
    assert not errors, errors


def test_rayservice_matches_kuberay_crd(rendered: Rendered, rayservice_schema: dict[str, Any]) -> None:
    rayservice = rendered.rayservice
    assert rayservice["apiVersion"] == "ray.io/v1"
    errors = sorted(jsonschema.Draft7Validator(rayservice_schema).iter_errors(rayservice), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def test_prometheus_monitors_select_the_ray_pods_metrics_port(rendered: Rendered) -> None:
    pod_labels = [t["metadata"]["labels"] for t in rendered.pod_templates()]
    ports = [{p["name"] for c in t["spec"]["containers"] for p in c["ports"]} for t in rendered.pod_templates()]
    for monitor in rendered.kind("PodMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert all(selector.items() <= labels.items() for labels in pod_labels)
        assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
        assert all("metrics" in names for names in ports)
    for monitor in rendered.kind("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in rendered.kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"].items() <= pod_labels[0].items()
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]


def test_the_dashboard_configmap_holds_the_dashboard_file(rendered: Rendered) -> None:
    (configmap,) = [c for c in rendered.kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "turnout.json").read_text())
    assert json.loads(configmap["data"]["turnout.json"]) == shipped
