"""Which local models have a running replica, read from Serve's own status.

A model whose replicas are all gone (their node was lost) or cannot be placed (the cluster has no
room for their resources) has no replica to answer. A deployment handle would queue a request for
it until a replica appears, which may be never. The entry reads ``serve.status()`` every health
period instead; a model without a running replica is unavailable, with Serve's reason, and the
router skips it (the request falls back) until a replica runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from service.backends.replica import ReplicaBackend
from service.gateway import Gateway

log = logging.getLogger("turnout.availability")

RUNNING = "RUNNING"


def unavailable_reasons(status: Any, deployments: Mapping[str, tuple[str, str]]) -> dict[str, str | None]:
    """For each model id in ``deployments`` (model id -> (application, deployment name)), why it
    has no running replica, or None when one runs. ``status`` is a ``ray.serve.schema.ServeStatus``.

    A model whose application or deployment Serve does not list is left out (nothing is known
    yet; the caller keeps what it had).
    """
    reasons: dict[str, str | None] = {}
    for model_id, (app_name, name) in deployments.items():
        app = status.applications.get(app_name)
        deployment = app.deployments.get(name) if app is not None else None
        if deployment is None:
            continue
        states = {str(getattr(s, "value", s)): n for s, n in deployment.replica_states.items()}
        reasons[model_id] = None if states.get(RUNNING, 0) > 0 else _reason(deployment, states)
    return reasons


def _reason(deployment: Any, states: Mapping[str, int]) -> str:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items()) if n) or "none"
    message = (deployment.message or "").strip()
    reason = f"no running replica (replicas: {counts})"
    return f"{reason}: {message}" if message else reason


def apply_status(status: Any | None, gateway: Gateway) -> None:
    """Mark the models the gateway reaches by handle as (un)available from ``status`` (None: no
    news). Changes are logged with the reason; ``turnout_model_available`` follows each model.

    A model that is available again runs on replicas that were not there when its circuit
    opened, so its circuit starts closed (an entry replica that sends it no request would
    otherwise show it half-open until one comes).
    """
    if status is None:
        return
    replicas = {i: b for i, b in gateway.backends.items() if isinstance(b, ReplicaBackend)}
    for model_id, reason in unavailable_reasons(status, {i: b.deployment for i, b in replicas.items()}).items():
        backend = replicas[model_id]
        was = backend.unavailable_reason()
        if reason is None and was is not None:
            log.warning("%s is available again", model_id)
            gateway.circuits.reset(model_id)
        elif reason is not None and reason != was:
            log.warning("%s is unavailable: %s", model_id, reason)
        backend.set_unavailable(reason)
        gateway.metrics.available(model_id, reason is None)


async def read_serve_status() -> Any | None:
    """``serve.status()`` off the event loop, or None outside a running Serve instance."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return None
    try:
        return await asyncio.to_thread(serve.status)
    except Exception:
        log.warning("cannot read Serve's status", exc_info=True)
        return None
