"""The engine class of Turnout's replicas: Ray Serve LLM's ``VLLMEngine`` as Turnout launches it.

Two differences, both on the way to starting the engine:

- Ray Serve LLM runs a "node initialization" task on the replica's node before every engine
  start (and restart), in a new worker process that imports torch, transformers and Ray Serve
  LLM (about 6 s of CPU here), to download the model. A model in Turnout's store is on that node
  already (the store is on shared storage on a cluster), so the task is skipped for a model
  whose source is a local directory.
- Ray Serve LLM sets vLLM's ``distributed_executor_backend`` to ``mp`` for every CPU engine,
  whatever the engine arguments say. Turnout's launch plan runs a one-rank CPU engine with
  ``uni`` (the model in the engine core's process; see ``engine.config``): that choice is put
  back here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine

_BACKEND = "distributed_executor_backend"


class TurnoutVLLMEngine(VLLMEngine):
    """``VLLMEngine`` without the node-initialization task for local checkpoints, and with the
    launch plan's executor."""

    async def start(self) -> None:
        source = self.llm_config.model_loading_config.model_source
        if isinstance(source, str) and Path(source).is_dir():
            self.llm_config.get_or_create_callback().ctx.run_init_node = False
        await super().start()

    def _prepare_engine_config(self, callback_ctx: Any) -> tuple[Any, Any, Any]:
        engine_args, frontend_args, vllm_config = super()._prepare_engine_config(callback_ctx)
        planned = self.llm_config.engine_kwargs.get(_BACKEND)
        if planned == "uni" and vllm_config.parallel_config.world_size == 1:
            setattr(engine_args, _BACKEND, planned)
            vllm_config.parallel_config.distributed_executor_backend = planned
        return engine_args, frontend_args, vllm_config
