"""A local model without a running replica (its node lost, or no room to place it) is skipped at
once, with Serve's reason in /v1/models, the metrics and the log; requests already waiting for it
stop waiting. Serve's status is built from Ray's own schema classes."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi.testclient import TestClient
from ray.serve._private.common import (
    DeploymentStatus,
    DeploymentStatusTrigger,
    ReplicaState,
)
from ray.serve.llm.openai_api_models import ChatCompletionResponse
from ray.serve.schema import (
    ApplicationStatus,
    ApplicationStatusOverview,
    DeploymentStatusOverview,
    ServeStatus,
)

from router.errors import TargetUnavailableError
from service.api.app import create_app
from service.availability import apply_status, unavailable_reasons
from service.config import TurnoutConfig
from testkit.fakes import JSON_MINI, NANO, build_gateway, chat_body, chunk
from tests.unit.test_service_backends import FakeResponses, post_chat, replica, sse

UNPLACED = (
    "Deployment 'model:chat-nano' in application 'turnout' has 1 replicas that have taken more than "
    "30s to be scheduled. Resources required for each replica: {\"CPU\": 0.5}, total resources "
    "available: {}."
)


def status(**replica_states: dict[ReplicaState, int]) -> ServeStatus:
    """Serve's status with one deployment per keyword (its replica counts by state)."""
    deployments = {
        name.replace("_", "-").replace("model-", "model:"): DeploymentStatusOverview(
            status=DeploymentStatus.HEALTHY if states.get(ReplicaState.RUNNING) else DeploymentStatus.UPSCALING,
            status_trigger=DeploymentStatusTrigger.CONFIG_UPDATE_STARTED,
            replica_states=states,
            message="" if states.get(ReplicaState.RUNNING) else UNPLACED,
        )
        for name, states in replica_states.items()
    }
    app = ApplicationStatusOverview(
        status=ApplicationStatus.RUNNING, message="", last_deployed_time_s=0.0, deployments=deployments
    )
    return ServeStatus(applications={"turnout": app})


def test_a_deployment_without_a_running_replica_is_unavailable_with_serves_reason():
    reasons = unavailable_reasons(
        status(model_chat_nano={ReplicaState.STARTING: 1}, model_json_mini={ReplicaState.RUNNING: 2}),
        {NANO: ("turnout", "model:chat-nano"), JSON_MINI: ("turnout", "model:json-mini"),
         "local/llama/unknown": ("turnout", "model:unknown")},
    )
    assert reasons[JSON_MINI] is None
    assert reasons[NANO].startswith("no running replica (replicas: 1 starting): Deployment 'model:chat-nano'")
    assert "taken more than 30s to be scheduled" in reasons[NANO]
    assert "local/llama/unknown" not in reasons  # not listed yet: nothing known


def test_unknown_application_tells_nothing():
    assert unavailable_reasons(status(model_chat_nano={}), {NANO: ("other", "model:chat-nano")}) == {}


def test_an_unavailable_model_is_skipped_at_once_and_reported(caplog):
    backend, handle = replica()
    stack = build_gateway(backends={NANO: backend})
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    with caplog.at_level(logging.WARNING, logger="turnout.availability"):
        apply_status(status(model_chat_nano={ReplicaState.STARTING: 1}), stack.gateway)
    response = post_chat(client, NANO)
    assert response.status_code == 200
    assert response.headers["X-Turnout-Route"] == f"{NANO}=unavailable, {JSON_MINI}=served"
    assert handle.requests == []  # never sent to a replica that is not there
    card = client.get(f"/v1/models/{NANO}").json()["turnout"]
    assert card["unavailable_reason"].startswith("no running replica (replicas: 1 starting)")
    assert ("set", 0, {"model": NANO}) in stack.recorder.calls("turnout_model_available")
    assert f"{NANO} is unavailable: no running replica" in caplog.text

    for _ in range(10):  # its circuit opens while it is gone
        stack.gateway.circuits.breaker(NANO).record_failure()
    assert client.get(f"/v1/models/{NANO}").json()["turnout"]["circuit"] == "open"
    handle.responses.append(FakeResponses([ChatCompletionResponse.model_validate(chat_body(NANO, "back"))]))
    apply_status(status(model_chat_nano={ReplicaState.RUNNING: 1}), stack.gateway)
    assert post_chat(client, NANO).headers["X-Turnout-Route"] == f"{NANO}=served"
    back = client.get(f"/v1/models/{NANO}").json()["turnout"]
    assert "unavailable_reason" not in back and back["circuit"] == "closed"
    assert stack.recorder.calls("turnout_model_available")[-1] == ("set", 1, {"model": NANO})


async def test_a_request_waiting_for_a_lost_model_stops_waiting():
    waiting = FakeResponses([[sse(chunk(NANO, "never"))]], delay_s=60)
    backend, _ = replica(waiting, timeout_s=120)
    call = asyncio.ensure_future(backend.chat(object()))
    await asyncio.sleep(0.05)
    assert not call.done()
    backend.set_unavailable("no running replica (replicas: 1 starting)")
    with pytest.raises(TargetUnavailableError, match="unavailable: no running replica"):
        await asyncio.wait_for(call, 2)
    assert waiting.cancelled
    assert not await backend.healthy()


async def test_an_unavailable_mark_does_not_outlive_the_replicas_return():
    backend, _ = replica(FakeResponses([ChatCompletionResponse.model_validate(chat_body(NANO))]))
    backend.set_unavailable("gone")
    backend.set_unavailable(None)
    assert backend.unavailable_reason() is None
    assert (await backend.chat(object())).body["model"] == NANO
    assert await backend.healthy()
