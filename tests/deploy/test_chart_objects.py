"""Every rendered object is valid: Kubernetes kinds against Kubernetes' schemas, the RayService
against KubeRay's CRD schema, and the Prometheus operator's kinds structurally."""

from __future__ import annotations

import json

from tests.deploy.chart import CHART, Rendered, kubernetes_errors, rayservice_errors

NOT_IN_KUBERNETES = {"RayService", "PodMonitor", "ServiceMonitor"}


def test_kubernetes_objects_are_valid(rendered: Rendered) -> None:
    objects = [o for o in rendered.objects if o["kind"] not in NOT_IN_KUBERNETES]
    assert {"Service", "ConfigMap"} <= {o["kind"] for o in objects}
    errors = [e for e in map(kubernetes_errors, objects) if e]
    assert not errors, errors


def test_pod_templates_are_valid_kubernetes(rendered: Rendered) -> None:
    """The head and worker templates, checked as PodTemplates (containers, probes, volumes)."""
    templates = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": t}
        for i, t in enumerate(rendered.pod_templates())
    ]
    errors = [e for e in map(kubernetes_errors, templates) if e]
    assert not errors, errors


def test_rayservice_matches_kuberay_crd(rendered: Rendered) -> None:
    rayservice = rendered.rayservice
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert not rayservice_errors(rayservice)


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
