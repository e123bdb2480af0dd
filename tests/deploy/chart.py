"""Render the Helm chart offline with the real Helm engine (helm-python-sdk), read the result, and
check objects against Kubernetes' schemas and KubeRay's RayService CRD."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "turnout"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE, NAMESPACE = "llm", "serving"
KUBERNETES = "1.35.0"
# KubeRay's RayService CRD (ray.io/v1, KubeRay master of 2026-08-19), kept with the tests.
RAYSERVICE_CRD = Path(__file__).resolve().parent / "crds" / "ray.io_rayservices.yaml.gz"


@dataclass
class Rendered:
    """One render: the merged values, the objects by kind, and NOTES.txt."""

    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = self.kind(kind)
        return found

    @property
    def rayservice(self) -> dict[str, Any]:
        return self.one("RayService")

    @property
    def serve_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.rayservice["spec"]["serveConfigV2"])

    @property
    def fullname(self) -> str:
        return self.rayservice["metadata"]["name"]

    def pod_templates(self) -> list[dict[str, Any]]:
        cluster = self.rayservice["spec"]["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        return [g["template"] for g in groups]

    def ray_containers(self) -> list[dict[str, Any]]:
        return [c for t in self.pod_templates() for c in t["spec"]["containers"]]


def load_values(path: Path | None) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {} if path else {}


def render(chart: helm_python.Chart, values: dict[str, Any]) -> Rendered:
    """Render ``values`` over the chart's defaults, as ``helm install`` would (schema included)."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
    objects = [
        doc
        for path, text in manifests.items() if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text) if doc
    ]
    return Rendered(chart.merge_values(values), objects, notes)


def kubernetes_errors(obj: dict[str, Any]) -> str | None:
    """Why the API server would reject ``obj`` (strict field validation), or None."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{obj['kind']}/{obj['metadata']['name']}: {str(e).splitlines()[0]} at {list(e.path)}"
    return None


@cache
def _rayservice_schema() -> dict[str, Any]:
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


def rayservice_errors(rayservice: dict[str, Any]) -> list[str]:
    """Where ``rayservice`` breaks KubeRay's CRD schema (at most five places)."""
    errors = sorted(jsonschema.Draft7Validator(_rayservice_schema()).iter_errors(rayservice), key=str)
    return [f"{list(e.path)}: {e.message}" for e in errors[:5]]
