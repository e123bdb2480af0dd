"""The Ray Serve deployment graph: Turnout's ingress ahead of one LLMServer deployment per model."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, build_llm_deployment

from engine.errors import ConfigError, ModelExistsError, ModelNotFoundError
from engine.launch.plan import build_engine_args
from engine.launch.settings import Platform, detect_platform
from engine.lora.adapter import adapter_id
from engine.protocol import Capability, ModelRecord, ModelType, parse_model_id
from engine.store.manager import LocalModelManager
from service.config import TurnoutConfig, load_config
from service.deployment import TurnoutIngress
from service.edge import TurnoutEdge
from service.model_config import ModelSettings
from service.serve_overrides.kv_router import router_config as kv_router_config
from service.serve_overrides.llm_server import TurnoutLLMServer
from service.serve_overrides.request_router import ingress_router, router_config

_FROM_RECORD = ("model", "served_model_name")
# vLLM publishes its prefix cache's events on the node's address (tcp://*:0 binds VLLM_HOST_IP,
# see service.serve_overrides.engine_class); enable_prompt_tokens_details: cached tokens in usage
KV_EVENTS = {
    "kv_events_config": {
        "enable_kv_cache_events": True, "publisher": "zmq", "topic": "kv",
        "endpoint": "tcp://*:0", "replay_endpoint": "tcp://*:0",
    },
    "enable_prompt_tokens_details": True,
}


def llm_config(model: ModelSettings, record: ModelRecord, platform: Platform, store_root: Path | None = None) -> LLMConfig:
    """The ``ray.serve.llm`` configuration of one model's replicas.

    A model that serves adapters reads them from the store at ``store_root`` (its replicas get it
    as ``TURNOUT_HOME``; default: the replicas' own ``TURNOUT_HOME``); a model quantized to int8 at
    load on the CPU is served from its copy in that store's cache."""
    launch = build_engine_args(record, model.engine, platform, store_root)
    engine_kwargs = {k: v for k, v in launch.engine_kwargs.items() if k not in _FROM_RECORD}
    env = dict(launch.env)
    if model.engine.max_loras and store_root is not None:
        env["TURNOUT_HOME"] = str(store_root)
    actor: dict[str, Any] = {"num_cpus": 0}
    deployment: dict[str, Any] = {"max_ongoing_requests": model.max_ongoing_requests, "ray_actor_options": actor}
    if model.autoscaling:
        deployment["autoscaling_config"] = model.autoscaling.model_dump()
    else:
        deployment["num_replicas"] = model.replicas
    if model.routing == "prefix_affinity":
        deployment["request_router_config"] = router_config(model.affinity)
    elif model.routing == "kv_aware":
        engine_kwargs |= copy.deepcopy(KV_EVENTS)  # each config its own: Ray may rewrite it in place
        tokenizer = launch.engine_kwargs.get("tokenizer") or launch.engine_kwargs["model"]
        deployment["request_router_config"] = kv_router_config(model.kv, tokenizer, env.get("PYTHONHASHSEED"))
    return LLMConfig(
        # the checkpoint the engine loads: the record's, or its int8 copy (quantization: int8 on the CPU)
        model_loading_config={"model_id": record.id, "model_source": launch.engine_kwargs["model"]},
        engine_kwargs=engine_kwargs,
        accelerator_config={"kind": "cpu"} if platform is Platform.CPU else {"kind": "gpu"},
        placement_group_config=_placement(model, platform),
        runtime_env={"env_vars": env} if env else None,
        deployment_config=deployment,
        log_engine_metrics=True,
    )


def _placement(model: ModelSettings, platform: Platform) -> dict[str, Any]:
    if platform is Platform.CPU:
        return {"bundles": [{"CPU": model.num_cpus, **model.resources}]}
    gpus = max(model.num_gpus, 1)
    return {"bundle_per_worker": {"GPU": gpus / model.engine.tensor_parallel_size, "CPU": 1, **model.resources}}


def model_record(store: LocalModelManager, model: ModelSettings) -> ModelRecord:
    """The store's record of ``model``, fetched into the store first when it has a ``source``.

    A registered model is used as it is, whatever its source says. A missing model without a
    source raises ``ModelNotFoundError``, as before sources existed. A missing model with one is
    fetched through ``LocalModelManager.download_model`` (hub downloads read ``HF_TOKEN`` from the
    environment) and registered under the configured family and name, so the record's id is
    ``model.id``; a concurrent fetch of the same model that registers first wins. Blocks until the
    fetch is done, so it must not be called from a running event loop.
    """
    try:
        return store.get_model(model.id)
    except ModelNotFoundError:
        if model.source is None:
            raise
    family, name = parse_model_id(model.id)
    source = model.source
    fetch = store.download_model(source.ref, family, source.kind, name=name, revision=source.revision)
    try:
        return asyncio.run(fetch)
    except ModelExistsError:
        return store.get_model(model.id)


def register_adapters(store: LocalModelManager, model: ModelSettings) -> None:
    """Fetch ``model``'s configured adapters that the store lacks (hub, or a PEFT directory)."""
    if not model.adapters:
        return
    known = {a.id for a in store.adapters.list(base=model.id)}
    for adapter in model.adapters:
        if adapter_id(model.id, adapter.name) in known:
            continue
        try:
            if adapter.kind == "huggingface":
                store.adapters.pull(model.id, adapter.ref, name=adapter.name, revision=adapter.revision)
            else:
                store.adapters.register(model.id, Path(adapter.ref), name=adapter.name)
        except ModelExistsError:
            pass  # a concurrent start registered it first


def build_graph(config: TurnoutConfig, platform: Platform | None = None) -> Application:
    """The application: an HTTP entry bound to a handle of every other model's deployment.

    With ``server.data_path: direct`` and a local model that generates, the entry is that
    model's own deployment (:class:`~service.edge.TurnoutEdge`); otherwise it is the engine-less
    :class:`~service.deployment.TurnoutIngress`.
    """
    platform = platform or detect_platform()
    store = LocalModelManager(config.store_root)
    records = [model_record(store, m) for m in config.models]
    for model in config.models:
        register_adapters(store, model)
    edge = edge_model(config, records)
    handles = {
        r.id: build_llm_deployment(
            llm_config(m, r, platform, store.root), name_prefix="model:", deployment_cls=TurnoutLLMServer
        )
        for m, r in zip(config.models, records)
        if r.id != edge
    }
    entry_limit = config.limits.max_ongoing_requests + 10  # the Guards' limit answers 503 first
    if edge is None:
        ingress = TurnoutIngress.options(max_ongoing_requests=entry_limit, ray_actor_options={"num_cpus": 0})
        return ingress.bind(config, records, handles)
    settings, record = next((m, r) for m, r in zip(config.models, records) if r.id == edge)
    app = build_llm_deployment(
        llm_config(settings, record, platform, store.root),
        name_prefix="model:",
        deployment_cls=TurnoutEdge,
        bind_kwargs={
            "turnout": config, "records": records, "handles": handles,
            "max_in_flight": settings.max_ongoing_requests,
        },
        override_serve_options={"max_ongoing_requests": entry_limit},
    )
    if settings.routing in ("prefix_affinity", "kv_aware"):  # HAProxy asks the model's request router
        return app._with_ingress_request_router(ingress_router(app))
    return app


def edge_model(config: TurnoutConfig, records: list[ModelRecord]) -> str | None:
    """The model whose replicas are the HTTP entry, or None for the engine-less ingress."""
    if config.server.data_path == "ingress":
        return None
    if config.server.edge_model is not None:
        record = next(r for r in records if r.id == config.server.edge_model)
        if not _generates(record):
            raise ConfigError(
                f"server.edge_model: {record.id} does not generate text; the entry must be a chat "
                "or completion model", param="server.edge_model",
            )
        return record.id
    return next((r.id for r in records if _generates(r)), None)


def _generates(record: ModelRecord) -> bool:
    return record.family is not ModelType.EMBEDDING and (
        record.has(Capability.CHAT) or record.has(Capability.COMPLETION)
    )


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for Serve config files: ``import_path: service.graph:app_builder``.

    ``args`` is ``{"config": <path to a Turnout YAML>}`` or ``{"turnout": <the config itself>}``;
    empty args serve the demo graph.
    """
    if "turnout" in args:
        return build_graph(TurnoutConfig(**args["turnout"]))
    return build_graph(load_config(args.get("config")))
