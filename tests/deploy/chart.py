"""Render the Helm chart offline with the real Helm engine (helm-python-sdk) and read the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "turnout"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE, NAMESPACE = "llm", "serving"


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

    def pod_templates(self) -> list[dict[str, Any]]:
        cluster = self.rayservice["spec"]["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        return [g["template"] for g in groups]


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
