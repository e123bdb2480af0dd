"""The engine class of Turnout's replicas: Ray Serve LLM's ``VLLMEngine`` as Turnout launches it.

Three differences, all on the way to starting the engine:

- The launch plan's node work (``engine.launch.node``: the int8 copy, the checks that need this
  node's CPU or GPU) is done first, here on the node that runs the engine.

- Ray Serve LLM runs a "node initialization" task on the replica's node before every engine
  start (and restart), in a new worker process that imports torch, transformers and Ray Serve
  LLM (about 6 s of CPU here), to download the model. A model in Turnout's store is on that node
  already (the store is on shared storage on a cluster), so the task is skipped for a model
  whose source is a local directory.
- Ray Serve LLM sets vLLM's ``distributed_executor_backend`` to ``mp`` for every CPU engine,
  whatever the engine arguments say. Turnout's launch plan runs a one-rank CPU engine with
  ``uni`` (the model in the engine core's process; see ``engine.launch.plan``): that choice is put
  back here.

And one addition: a model routed ``kv_aware`` publishes its engine's KV events on this node's
address (vLLM binds ``tcp://*:0`` to ``VLLM_HOST_IP``, set here to the Ray node's address: the
loopback address on a local Ray), and the replica advertises the bound endpoints and the block
size in its routing stats, where :class:`service.serve_overrides.kv_router.KvAwareRouter` finds them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import ray
from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine

from engine.launch.node import NodeWork, prepare_node

_BACKEND = "distributed_executor_backend"
KV_STATS_KEY = "turnout_kv"  # read by service.serve_overrides.kv_router


class TurnoutVLLMEngine(VLLMEngine):
    """``VLLMEngine`` that does the plan's node work first, skips the node-initialization task for
    local checkpoints, and keeps the launch plan's executor."""

    async def start(self) -> None:
        await asyncio.to_thread(prepare_node, NodeWork.from_env())
        source = self.llm_config.model_loading_config.model_source
        if isinstance(source, str) and Path(source).is_dir():
            self.llm_config.get_or_create_callback().ctx.run_init_node = False
        publishes = bool(self.llm_config.engine_kwargs.get("kv_events_config"))
        if publishes:
            os.environ["VLLM_HOST_IP"] = ray.util.get_node_ip_address()
        await super().start()
        if publishes:
            self._routing_stats = {**self._routing_stats, **self._kv_event_stats()}

    def _kv_event_stats(self) -> dict[str, Any]:
        """The routing-stats entry that advertises this engine's KV event publisher."""
        sources = self._engine_client.get_kv_event_sources()
        if not sources:
            return {}
        config = sources[min(sources)]
        block_size = self._engine_client.vllm_config.cache_config.block_size
        return {KV_STATS_KEY: {"endpoint": config.endpoint, "replay_endpoint": config.replay_endpoint,
                               "topic": config.topic, "block_size": block_size}}

    def _prepare_engine_config(self, callback_ctx: Any) -> tuple[Any, Any, Any]:
        engine_args, frontend_args, vllm_config = super()._prepare_engine_config(callback_ctx)
        planned = self.llm_config.engine_kwargs.get(_BACKEND)
        if planned == "uni" and vllm_config.parallel_config.world_size == 1:
            setattr(engine_args, _BACKEND, planned)
            vllm_config.parallel_config.distributed_executor_backend = planned
        return engine_args, frontend_args, vllm_config
