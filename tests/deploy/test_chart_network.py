"""Who reaches the Ray pods. The NetworkPolicy lets the release's own Ray pods in on every port and
anyone else only on the API port, plus the metrics and operator ports from the peers named; the
chart's Services expose the API alone (and the metrics port, to Prometheus, when asked)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import helm_python

from tests.deploy.chart import NAMESPACE, RELEASE, Rendered, kubernetes_errors, render

EVERY_PORT = frozenset({-1})  # a rule without ports: every port
DASHBOARD, METRICS = 8265, 8080


@dataclass(frozen=True)
class Source:
    """Where a connection comes from: a pod (namespace and labels) or an address outside the cluster."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


NAME, INSTANCE, COMPONENT = "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"
STRANGER = Source(NAMESPACE, {"app": "curl"})
OTHER_RELEASE_HEAD = Source(NAMESPACE, {NAME: "turnout", INSTANCE: "other", COMPONENT: "head"})
# A pod of the release that is no Ray pod (say, a job the chart may add): an outsider too.
RELEASE_NON_RAY = Source(NAMESPACE, {NAME: "turnout", INSTANCE: RELEASE, COMPONENT: "job"})
# The KubeRay operator as its Helm chart, its kustomize manifests and this chart's subchart label it.
OPERATOR = Source("ray-system", {NAME: "kuberay-operator", COMPONENT: "kuberay-operator"})
KUSTOMIZE_OPERATOR = Source("ray-system", {NAME: "kuberay", COMPONENT: "kuberay-operator"})
SUBCHART_OPERATOR = Source(NAMESPACE, {NAME: "kuberay-operator", INSTANCE: RELEASE, COMPONENT: "kuberay-operator"})
PROMETHEUS = Source("monitoring", {NAME: "prometheus"})
INGRESS_CONTROLLER = Source("ingress-nginx", {NAME: "ingress-nginx"})
INTERNET = Source(ip="203.0.113.7")
OUTSIDERS = [STRANGER, OTHER_RELEASE_HEAD, RELEASE_NON_RAY, OPERATOR, KUSTOMIZE_OPERATOR, SUBCHART_OPERATOR,
             PROMETHEUS, INGRESS_CONTROLLER, INTERNET]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector applied to ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        matched = {
            "In": present and value in e.get("values", []),
            "NotIn": not present or value not in e.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[e["operator"]]
        if not matched:
            return False
    return True


def _admits(peer: dict[str, Any], source: Source) -> bool:
    if "ipBlock" in peer:
        if not source.ip:
            return False
        address, block = ipaddress.ip_address(source.ip), peer["ipBlock"]
        excepted = any(address in ipaddress.ip_network(c) for c in block.get("except", []))
        return address in ipaddress.ip_network(block["cidr"]) and not excepted
    if source.ip:
        return False
    if "namespaceSelector" in peer:
        in_namespace = _selects(peer["namespaceSelector"], source.namespace_labels)
    else:
        in_namespace = source.namespace == NAMESPACE  # a bare podSelector: the policy's namespace
    return in_namespace and _selects(peer.get("podSelector", {}), source.labels)


def reachable(policies: list[dict[str, Any]], source: Source) -> frozenset[int]:
    """The TCP ports of the selected pods that ``source`` may connect to (EVERY_PORT: all of them)."""
    ports: set[int] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if peers and not any(_admits(p, source) for p in peers):
                continue
            if "ports" not in rule:
                return EVERY_PORT
            assert all(p.get("protocol", "TCP") == "TCP" and "endPort" not in p for p in rule["ports"])
            ports |= {p["port"] for p in rule["ports"]}
    return frozenset(ports)


def _ray_pods(rendered: Rendered) -> list[Source]:
    return [Source(NAMESPACE, t["metadata"]["labels"]) for t in rendered.pod_templates()]


def _serve_port(rendered: Rendered) -> int:
    return rendered.serve_config["http_options"]["port"]


def test_the_policy_selects_exactly_the_releases_ray_pods(rendered: Rendered) -> None:
    (policy,) = rendered.kind("NetworkPolicy")
    selector = policy["spec"]["podSelector"]
    assert all(_selects(selector, pod.labels) for pod in _ray_pods(rendered))
    assert not any(_selects(selector, s.labels) for s in OUTSIDERS if s.labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]


def test_every_port_only_from_the_releases_ray_pods(rendered: Rendered) -> None:
    """Ray pods reach each other everywhere; outsiders at most the ports the values open to them."""
    policies = rendered.kind("NetworkPolicy")
    for pod in _ray_pods(rendered):
        assert reachable(policies, pod) == EVERY_PORT
    opened = {_serve_port(rendered)}
    if rendered.values["networkPolicy"]["metricsFrom"]:
        opened.add(METRICS)
    if rendered.values["networkPolicy"]["operatorFrom"]:
        opened.add(DASHBOARD)
    for source in OUTSIDERS:
        assert reachable(policies, source) <= opened, source
    for rule in policies[0]["spec"]["ingress"]:
        if "ports" not in rule:
            assert rule["from"] == [{"podSelector": policies[0]["spec"]["podSelector"]}]


def test_by_default_others_reach_the_api_and_the_operator_also_the_dashboard(chart: helm_python.Chart) -> None:
    rendered = render(chart, {})
    policies = rendered.kind("NetworkPolicy")
    api = frozenset({8000})
    for source in (STRANGER, OTHER_RELEASE_HEAD, RELEASE_NON_RAY, PROMETHEUS, INGRESS_CONTROLLER, INTERNET):
        assert reachable(policies, source) == api, source
    for operator in (OPERATOR, KUSTOMIZE_OPERATOR, SUBCHART_OPERATOR):
        assert reachable(policies, operator) == {8000, DASHBOARD}, operator


def test_named_peers_reach_their_port_and_no_one_else_does(chart: helm_python.Chart) -> None:
    def namespace(name: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    operator = {**namespace("ray-system"), "podSelector": {"matchLabels": {COMPONENT: "kuberay-operator"}}}
    office = {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.7/32"]}}
    values = {
        "turnout": {"server": {"port": 8100}},
        "networkPolicy": {
            "apiFrom": [namespace("ingress-nginx"), office],
            "metricsFrom": [namespace("monitoring")],
            "operatorFrom": [operator],
        },
    }
    rendered = render(chart, values)
    policies = rendered.kind("NetworkPolicy")
    assert not kubernetes_errors(policies[0])
    assert reachable(policies, INGRESS_CONTROLLER) == {8100}
    assert reachable(policies, Source(ip="203.0.113.9")) == {8100}
    assert reachable(policies, PROMETHEUS) == {METRICS}
    assert reachable(policies, OPERATOR) == reachable(policies, KUSTOMIZE_OPERATOR) == {DASHBOARD, 8100}
    for source in (STRANGER, OTHER_RELEASE_HEAD, RELEASE_NON_RAY, SUBCHART_OPERATOR, INTERNET):
        assert reachable(policies, source) == frozenset(), source
    for pod in _ray_pods(rendered):
        assert reachable(policies, pod) == EVERY_PORT


def test_without_operator_peers_the_operator_is_an_outsider(chart: helm_python.Chart) -> None:
    rendered = render(chart, {"networkPolicy": {"operatorFrom": []}})
    assert reachable(rendered.kind("NetworkPolicy"), OPERATOR) == {8000}


def test_the_policy_can_be_turned_off(chart: helm_python.Chart) -> None:
    assert render(chart, {"networkPolicy": {"enabled": False}}).kind("NetworkPolicy") == []


def test_the_services_expose_the_api_alone_and_metrics_only_headless(rendered: Rendered) -> None:
    name = rendered.fullname
    services = {s["metadata"]["name"]: s for s in rendered.kind("Service")}
    (api,) = services.pop(name)["spec"]["ports"]
    assert api["targetPort"] == _serve_port(rendered)
    if rendered.values["monitoring"]["serviceMonitor"]["enabled"]:
        metrics = services.pop(f"{name}-metrics")["spec"]
        assert metrics["clusterIP"] == "None"
        assert [(p["port"], p["targetPort"]) for p in metrics["ports"]] == [(METRICS, METRICS)]
    assert services == {}
    for ingress in rendered.kind("Ingress"):
        backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
        assert backends == {name}
