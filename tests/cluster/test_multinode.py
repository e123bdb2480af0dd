"""Turnout on a real multi-node Ray cluster (tests/cluster/conftest.py), on the fast data path.

In order, on one cluster: ``turnout serve`` joins it through ``RAY_ADDRESS`` and places each
replica where its resources ask; a worker node is lost under load (12 clients, streams included)
and comes back; ``serve deploy`` of ``turnout build-config``'s output (the path KubeRay takes)
serves an autoscaled model that grows onto the other worker under load and shrinks after it; and
a changed config is rolled out while clients run. Figures go to stdout (``pytest -s``) and, with
``TURNOUT_CLUSTER_REPORT=FILE``, to a JSON file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from engine.store.demo import DEEPSEEK_ID, SMOLLM2_ID
from testkit.servers import REPO, Server, answers, free_port, start, wait_until
from tests.cluster.conftest import ACCEL, NODE_B, RayCluster
from tests.cluster.load import HANG, OK, TRANSPORT, Load, summary

pytestmark = pytest.mark.cluster

APP = "turnout"
FIGURES: dict[str, Any] = {}


def joined_config(port: int) -> dict[str, Any]:
    """SmolLM2 on both workers (one ``accel`` each), DeepSeek pinned to worker B, each the other's
    fallback; quick health periods and a quick circuit so the test sees them act."""
    return {
        "models": [
            {"id": SMOLLM2_ID, "replicas": 2, "engine": {"cpu_threads_bind": "0"}, "resources": {ACCEL: 1}},
            {
                "id": DEEPSEEK_ID, "engine": {"cpu_threads_bind": "1", "max_model_len": 2048},
                "resources": {NODE_B: 1},
            },
        ],
        "routing": {
            "fallbacks": {SMOLLM2_ID: [DEEPSEEK_ID], DEEPSEEK_ID: [SMOLLM2_ID]},
            "circuit": {"failure_threshold": 2, "cooldown_s": 5},
        },
        "server": {"port": port},
        "limits": {"first_token_timeout_s": 30, "health_check_period_s": 2, "default_max_tokens": 32},
    }


def until(check: Callable[[], Any], timeout_s: float, what: str, period_s: float = 1.0) -> float:
    """Poll ``check`` until it is truthy; the seconds it took. Fails with ``what`` on time out."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"not within {timeout_s}s: {what}")
        time.sleep(period_s)


def card(base_url: str, model_id: str) -> dict[str, Any]:
    return httpx.get(f"{base_url}/v1/models/{model_id}", timeout=10).json()["turnout"]


def report(name: str, figures: dict[str, Any]) -> None:
    FIGURES[name] = figures
    print(f"\n{name}: {json.dumps(figures)}")
    if path := os.environ.get("TURNOUT_CLUSTER_REPORT"):
        Path(path).write_text(json.dumps(FIGURES, indent=2))


@pytest.fixture(scope="module")
def joined(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """``turnout serve`` joining the cluster through RAY_ADDRESS."""
    work = tmp_path_factory.mktemp("joined")
    port = free_port()
    config = work / "turnout.yaml"
    config.write_text(yaml.safe_dump(joined_config(port)))
    server = start(
        [str(REPO / ".venv" / "bin" / "turnout"), "serve", "--config", str(config)], work / "turnout.log",
        env={"RAY_ADDRESS": ray_cluster.address},
    )
    base_url = f"http://127.0.0.1:{port}"
    started = wait_until(
        server, lambda: "Turnout is serving" in server.log.read_text(errors="replace") and answers(f"{base_url}/ready"), 600
    )
    FIGURES["joined_startup_s"] = round(started, 1)
    yield server, base_url
    server.stop(signal.SIGINT)


def test_turnout_serve_joins_and_each_replica_runs_where_its_resources_ask(ray_cluster, joined):
    server, base_url = joined
    assert ray_cluster.running_on(APP, SMOLLM2_ID) == ["a", "b"]  # one accel on each worker
    assert ray_cluster.running_on(APP, DEEPSEEK_ID) == ["b"]  # pinned by node-b
    details = ray_cluster.serve_details()
    nodes_with_replicas = {
        ray_cluster.names.get(r["node_id"])
        for d in details["applications"][APP]["deployments"].values() for r in d["replicas"]
    }
    assert "head" not in nodes_with_replicas  # the head holds no model
    unauthenticated = httpx.get(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=30)
    assert unauthenticated.status_code == 401  # the dashboard's API wants the cluster's token
    proxies = sorted(ray_cluster.names.get(n, n) for n in details["proxies"])
    answer = httpx.post(
        f"{base_url}/v1/chat/completions", timeout=120,
        json={"model": SMOLLM2_ID, "messages": [{"role": "user", "content": "What is the capital of France?"}],
              "max_tokens": 16, "temperature": 0},
    )
    assert answer.status_code == 200, answer.text
    assert "Paris" in answer.json()["choices"][0]["message"]["content"]
    report("placement", {"smollm2": ray_cluster.running_on(APP, SMOLLM2_ID),
                         "deepseek": ray_cluster.running_on(APP, DEEPSEEK_ID), "proxies": proxies,
                         "startup_s": FIGURES["joined_startup_s"]})


def test_losing_a_worker_under_load_hangs_nothing_and_recovers(ray_cluster, joined):
    server, base_url = joined
    load = Load(base_url, [SMOLLM2_ID, DEEPSEEK_ID, "auto"], clients=12).start()
    time.sleep(10)
    lost_at = time.monotonic()
    lost = ray_cluster.lose_worker("b")
    detected = until(lambda: "unavailable_reason" in card(base_url, DEEPSEEK_ID), 60, "DeepSeek reported unavailable", 0.5)
    reason = card(base_url, DEEPSEEK_ID)["unavailable_reason"]
    metric = until(
        lambda: _gauge(ray_cluster.metrics_ports["a"], "ray_turnout_model_available", DEEPSEEK_ID) == 0.0,
        60, "turnout_model_available 0 for DeepSeek on worker A",
    )
    time.sleep(max(0.0, lost_at + 40 - time.monotonic()))  # 40 s of load after the loss
    outcomes = load.stop()
    orphans = ray_cluster.orphans(lost, grace_s=max(0.0, lost_at + 30 - time.monotonic()))
    during = summary(outcomes)
    after_detection = [o for o in outcomes if o.started > lost_at + detected + 5]
    deepseek_after = [o for o in after_detection if o.model == DEEPSEEK_ID]
    report("node_loss", {
        "requests": len(outcomes), "outcomes": during, "detected_s": round(detected, 1),
        "metric_s": round(metric, 1), "requests_after_detection": len(after_detection),
        "deepseek_after_detection": len(deepseek_after),
        "deepseek_after_detection_max_s": round(max((o.ended - o.started for o in deepseek_after), default=0), 2),
        "orphaned_processes": orphans, "reason": reason,
        "not_ok": [(o.model, o.stream, round(o.started - lost_at, 1), o.result, o.detail[:120])
                   for o in outcomes if o.result != OK],
    })

    ray_cluster.add_worker("b2", {ACCEL: 1, NODE_B: 1})
    back = until(lambda: ray_cluster.running_on(APP, DEEPSEEK_ID) == ["b2"]
                 and ray_cluster.running_on(APP, SMOLLM2_ID) == ["a", "b2"], 300, "replicas placed on the new node")
    available = until(lambda: "unavailable_reason" not in card(base_url, DEEPSEEK_ID), 60, "DeepSeek available again")

    last: dict[str, Any] = {}

    def served_and_closed() -> bool:
        response = httpx.post(f"{base_url}/v1/chat/completions", timeout=60,
                              json={"model": DEEPSEEK_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        state = card(base_url, DEEPSEEK_ID)
        last.update(route=response.headers.get("x-turnout-route"), status=response.status_code, card=state)
        return response.headers.get("x-turnout-route") == f"{DEEPSEEK_ID}=served" and state["circuit"] == "closed"

    closed = until(served_and_closed, 120, f"DeepSeek served again with its circuit closed (last: {last})")
    logged = ray_cluster.logs_containing(f"{DEEPSEEK_ID} is unavailable: no running replica")
    report("recovery", {
        "node_returned_to_placed_s": round(back, 1), "to_available_s": round(available, 1),
        "to_circuit_closed_s": round(closed, 1), "reason_logged_in": [f.name for f in logged],
    })
    assert during.get(HANG, 0) == 0, [o for o in outcomes if o.result == HANG]
    # HAProxy answers its own 500 while it still sends to the lost replica (seen: 1 request in 317,
    # 1.5 s after the loss); from then on nothing may fail
    assert not [o for o in outcomes if o.result.startswith("http_5") and o.started > lost_at + 5]
    assert after_detection and all(o.result == OK for o in after_detection), [o for o in after_detection if o.result != OK]
    # skipped at once (the probe's view "unhealthy", or "unavailable" at the call), served by SmolLM2
    skipped = (f"{DEEPSEEK_ID}=unhealthy, {SMOLLM2_ID}=served", f"{DEEPSEEK_ID}=unavailable, {SMOLLM2_ID}=served")
    assert deepseek_after and all(o.route in skipped for o in deepseek_after), [o.route for o in deepseek_after]
    # only streams the lost node's entry replica was answering broke off
    assert all(o.started < lost_at + 2 for o in outcomes if o.result == TRANSPORT)
    assert "no running replica" in reason
    assert logged, "the reason is not in the entry replicas' logs"
    assert orphans == []  # the lost node's engines ended with it


def _gauge(port: int, name: str, model: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def rolled_config(port: int) -> dict[str, Any]:
    """The next version: DeepSeek taken out, SmolLM2 autoscaled (1-2 replicas) instead of fixed."""
    config = joined_config(port)
    smollm2 = {**config["models"][0], "autoscaling": {
        "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2,
        "upscale_delay_s": 2, "downscale_delay_s": 5,
    }}
    del smollm2["replicas"]
    config["models"] = [smollm2]
    config["routing"] = {"circuit": config["routing"]["circuit"]}
    return config


def test_serve_deploy_of_build_config_rolls_a_new_config_under_load_losing_nothing(ray_cluster, joined, tmp_path):
    _, base_url = joined
    port = int(base_url.rsplit(":", 1)[1])
    config = tmp_path / "rolled.yaml"
    config.write_text(yaml.safe_dump(rolled_config(port)))
    serve_file = tmp_path / "serve.yaml"
    subprocess.run([str(REPO / ".venv" / "bin" / "turnout"), "build-config", "--config", str(config),
                    "--output", str(serve_file)], check=True, timeout=120)
    before = {r["id"] for r in ray_cluster.replicas(APP, SMOLLM2_ID)}
    load = Load(base_url, [SMOLLM2_ID, "auto"], clients=12).start()
    time.sleep(5)
    ray_cluster.serve_deploy(serve_file)
    deployed = time.monotonic()

    def rolled() -> bool:
        app = ray_cluster.serve_details()["applications"].get(APP, {})
        replicas = ray_cluster.replicas(APP, SMOLLM2_ID)
        return (app.get("status") == "RUNNING" and len(app.get("deployments", {})) == 1
                and replicas and all(r["state"] == "RUNNING" and r["id"] not in before for r in replicas))

    took = until(rolled, 420, "the new config rolled out")
    time.sleep(10)
    outcomes = load.stop()
    answer = httpx.post(f"{base_url}/v1/chat/completions", timeout=120, json={
        "model": SMOLLM2_ID, "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16, "temperature": 0})
    report("rollout", {"requests": len(outcomes), "outcomes": summary(outcomes), "rolled_s": round(took, 1),
                       "models_after": [m["id"] for m in httpx.get(f"{base_url}/v1/models").json()["data"]]})
    assert [o for o in outcomes if o.result != OK] == []
    assert "Paris" in answer.json()["choices"][0]["message"]["content"]
    assert DEEPSEEK_ID not in {m["id"] for m in httpx.get(f"{base_url}/v1/models").json()["data"]}
    assert time.monotonic() - deployed < 600


def test_an_autoscaled_model_grows_onto_the_other_worker_under_load_and_shrinks_after(ray_cluster, joined):
    _, base_url = joined
    one = until(lambda: len(ray_cluster.running_on(APP, SMOLLM2_ID)) == 1
                and len(ray_cluster.replicas(APP, SMOLLM2_ID)) == 1, 180, "one replica when idle")
    (first,) = ray_cluster.running_on(APP, SMOLLM2_ID)
    load = Load(base_url, [SMOLLM2_ID], clients=12).start()
    grew = until(lambda: len(set(ray_cluster.running_on(APP, SMOLLM2_ID))) == 2, 300, "a second replica on the other worker")
    nodes = ray_cluster.running_on(APP, SMOLLM2_ID)
    mark = {node: ray_cluster.requests_served(node, SMOLLM2_ID) for node in nodes}
    time.sleep(30)
    served = {node: ray_cluster.requests_served(node, SMOLLM2_ID) - mark[node] for node in nodes}
    outcomes = load.stop()
    shrank = until(lambda: len(ray_cluster.replicas(APP, SMOLLM2_ID)) == 1, 180, "back to one replica")
    report("autoscaling", {"idle_wait_s": round(one, 1), "first": first, "to_two_replicas_s": round(grew, 1),
                           "requests_per_node_in_30s": served, "to_one_replica_s": round(shrank, 1),
                           "outcomes": summary(outcomes)})
    assert all(count > 0 for count in served.values()), served
    assert [o for o in outcomes if o.result != OK] == []


def test_ctrl_c_removes_turnout_and_leaves_the_cluster(ray_cluster, joined):
    server, _ = joined
    assert server.stop(signal.SIGINT) == 0, server.tail()
    until(lambda: APP not in ray_cluster.serve_details().get("applications", {}), 60, "the app deleted")
    assert ray_cluster.cluster.head_node.any_processes_alive()
    assert all(node.any_processes_alive() for node in ray_cluster.workers.values())
