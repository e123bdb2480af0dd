"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation gets ``examples`` positive cases (valid under the schema) and, where it has
parameters or a body, ``examples`` negative ones (each breaking the schema somewhere). A case
passes when the server answers below 500 and every 4xx carries an OpenAI error body. Hypothesis
shrinking is off, so a run is bounded by the number of cases and a failure reports the case as
generated.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import schemathesis.specs.openapi.schemas  # noqa: F401 - see below
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.schemas import BaseSchema

from service.api.parsing import MAX_N

# schemathesis imports its OpenAPI modules on first use, and pytest rewrites them as it imports them
# (schemathesis is a pytest plugin). Imported inside the running e2e fuzz test, the first fuzz test
# of its worker in a shuffled run, CPython 3.11's parser failed there with "AST constructor
# recursion depth mismatch" (twice); imported here, at collection, nothing is parsed during a test.

COSTLY = ("max_tokens", "max_completion_tokens")
MAX_FUZZ_TOKENS = 8


@dataclass
class FuzzReport:
    """How many cases ran, by operation, mode and status."""

    statuses: Counter = field(default_factory=Counter)

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        lines = [f"{self.cases} fuzz cases"]
        lines += [f"  {op} {mode} -> {status}: {n}" for (op, mode, status), n in sorted(self.statuses.items())]
        return "\n".join(lines)


def check_response(status: int, body: Callable[[], Any], label: str) -> None:
    """No 5xx; a 4xx is an OpenAI error body."""
    assert status < 500, f"{label}: {status}"
    if status >= 400:
        error = body()["error"]
        assert isinstance(error["message"], str) and error["message"], f"{label}: {error}"
        assert isinstance(error["type"], str) and error["type"], f"{label}: {error}"


def bound_cost(case: Any) -> None:
    """Make a case cheap for real engines: valid ``max_tokens`` values (and a missing one) become
    at most 8, a valid ``n`` becomes 1. Invalid values stay as generated; other fields untouched."""
    body = case.body
    if not isinstance(body, dict) or case.operation.path not in ("/v1/chat/completions", "/v1/completions"):
        return
    for key in COSTLY:
        value = body.get(key)
        if _is_int(value) and value > MAX_FUZZ_TOKENS:
            body[key] = MAX_FUZZ_TOKENS
    if not any(key in body for key in COSTLY):
        body["max_tokens"] = MAX_FUZZ_TOKENS
    if _is_int(body.get("n")) and 1 <= body["n"] <= MAX_N:
        body["n"] = 1


def fuzz(
    schema: BaseSchema, call: Callable[[Any], Any], *, examples: int,
    prepare: Callable[[Any], None] = lambda case: None, modes: tuple[str, ...] = ("positive", "negative"),
    derandomize: bool = False,
) -> FuzzReport:
    """Run every operation of ``schema`` through ``call(case) -> response`` in each of ``modes``
    and check each answer; ``derandomize``: the same cases every run."""
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode(m) for m in modes):
            _run(operation, mode, call, prepare, examples, report, derandomize)
    return report


def _run(operation: Any, mode: GenerationMode, call: Callable, prepare: Callable, examples: int,
         report: FuzzReport, derandomize: bool = False) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def one(case: Any) -> None:
        prepare(case)
        response = call(case)
        report.statuses[(label, mode.value, response.status_code)] += 1
        check_response(response.status_code, response.json, f"{label} {mode.value} {case.body!r:.300}")

    try:
        one()
    except Unsatisfiable:  # nothing to break: no parameters and no body
        assert mode is GenerationMode.NEGATIVE, label


def _is_int(value: Any) -> bool:
    """An int, or a float the request models accept as one (``8.0``)."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)
