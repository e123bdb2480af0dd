"""Ray Serve LLM's own OpenAI app (``build_openai_app``) for one model, as its users deploy it.

Run as ``python -m benchmarks.rayllm_app MODEL_ID PORT [BIND [REPLICAS [prefix|default [ENGINE_JSON]]]]``
(``ENGINE_JSON``: more ``EngineSettings`` fields). The model's
``LLMConfig`` comes from the same function that configures Turnout's replicas
(``service.graph.llm_config``), so the engine arguments, placement and engine environment are
identical; only the app around it differs. ``prefix`` routes among the replicas with Ray Serve
LLM's ``PrefixCacheAffinityRouter``, with the load guard Turnout's affinity uses by default.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import ray
from ray import serve
from ray.serve.llm import build_openai_app

from engine.launch.settings import EngineSettings, Platform, detect_platform
from engine.store.manager import LocalModelManager
from service.cli.serve import local_ray_options
from service.graph import llm_config
from service.model_config import ModelSettings

RAY_PREFIX_ROUTER = {
    "request_router_class": "ray.serve.llm.request_router.PrefixCacheAffinityRouter",
    "request_router_kwargs": {"imbalanced_threshold": 4},
}


METRICS_PORT_ENV = "RAYLLM_METRICS_PORT"


def main(
    model_id: str, port: int, bind: str | None, replicas: int = 1, router: str | None = None,
    engine: dict | None = None,
) -> None:
    record = LocalModelManager().get_model(model_id)
    settings = ModelSettings(
        id=model_id, engine=EngineSettings(cpu_threads_bind=bind, **(engine or {})), replicas=replicas,
    )
    platform: Platform = detect_platform()
    config = llm_config(settings, record, platform)
    if router == "prefix":
        config.deployment_config["request_router_config"] = RAY_PREFIX_ROUTER
    metrics = os.environ.get(METRICS_PORT_ENV)  # Ray's Prometheus text, vLLM's counters in it
    ray.init(include_dashboard=False, **local_ray_options(),
             **({"_metrics_export_port": int(metrics)} if metrics else {}))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_openai_app({"llm_configs": [config]}), name="rayllm", route_prefix="/", blocking=False)
    print("rayllm is serving", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    while not stop["now"]:
        time.sleep(0.5)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], int(args[1]), args[2] if len(args) > 2 else None, int(args[3]) if len(args) > 3 else 1,
         args[4] if len(args) > 4 else None, json.loads(args[5]) if len(args) > 5 else None)
