"""``turnout chart-schema``: the Helm chart's values schema, its ``turnout`` part generated.

The chart's ``values.schema.json`` describes the chart's own keys by hand; ``properties.turnout``
and ``$defs`` are :class:`TurnoutConfig`'s JSON schema, so ``helm install`` checks the Turnout
configuration against the same schema ``turnout serve`` validates. Model-level rules that JSON
schema cannot express (unique ids, ``local/<family>/<name>``) are still checked when the Serve
application is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from engine.errors import ConfigError
from service.config import TurnoutConfig

DEFAULT_CHART = Path(__file__).resolve().parents[2] / "helm" / "turnout"
# Secret values come from Kubernetes Secrets as environment variables; the schema rejects them in
# `turnout:` so they never reach the Serve config (a RayService field anyone can read).
SECRET_FIELDS = {"AuthSettings": ("api_keys",)}
CHART_OPT = typer.Option(DEFAULT_CHART, "--chart", help="The Helm chart directory.")
CHECK_OPT = typer.Option(False, "--check", help="Fail if the file is stale; write nothing.")


def values_schema(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``properties.turnout`` and ``$defs`` replaced by TurnoutConfig's schema."""
    turnout = TurnoutConfig.model_json_schema()
    defs = turnout.pop("$defs")
    for model, fields in SECRET_FIELDS.items():
        for field in fields:
            defs[model]["properties"].pop(field)
    properties = {**current.get("properties", {}), "turnout": turnout}
    return {**current, "properties": properties, "$defs": defs}


def render_values_schema(path: Path) -> str:
    """The text ``path`` (a values.schema.json) should hold."""
    return json.dumps(values_schema(json.loads(path.read_text())), indent=2) + "\n"


def chart_schema(chart: Path = CHART_OPT, check: bool = CHECK_OPT) -> None:
    """Regenerate the ``turnout`` part of the chart's values.schema.json from TurnoutConfig."""
    path = chart / "values.schema.json"
    text = render_values_schema(path)
    if text == path.read_text():
        typer.echo(f"{path} is up to date")
    elif check:
        raise ConfigError(f"{path} is stale: run `turnout chart-schema`", param="chart")
    else:
        path.write_text(text)
        typer.echo(f"wrote {path}")
