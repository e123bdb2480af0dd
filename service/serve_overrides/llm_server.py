"""The per-model replica: ``ray.serve.llm``'s ``LLMServer`` hosting vLLM's AsyncLLM, plus two fixes.

- Ray 2.60 looks vLLM's tokenization handler up under its pre-0.32 name
  (``openai_serving_tokenization``); vLLM 0.32 calls it ``serving_tokenization``, so ``/tokenize``
  would answer "not supported" for every model. After the engine starts, the handler is wired in.
- ``LLMServer`` sends a stream's SSE events in batches, one every ``stream_batching_interval_ms``
  (50 ms), and the first batch waits out a whole interval too: up to 50 ms added to every time to
  first token. :class:`FirstOutputBatcher` sends the first batch as soon as the engine has output,
  and batches the rest as Ray does.
- Ray Serve LLM copies ``HF_TOKEN`` and ``HUGGING_FACE_HUB_TOKEN`` from the replica's environment
  into the runtime env of its engine workers, and Ray's runtime-env agent writes every runtime env
  to its log in clear text. Turnout's engines load checkpoints from the model store, never from the
  hub, so they need no token: the copy is turned off before the server starts.
- Serve's replica-to-replica gRPC server listens on the node's address only (``service.serve_overrides.grpc_binding``).
- A request that names one of the model's LoRA adapters (``<model id>:<name>``) has it loaded
  first: the adapter registry of the model store (``$TURNOUT_HOME``, shared by every node) is read
  then, so an adapter registered after the replica started is served without a restart. vLLM
  keeps loaded adapters and swaps them into its ``max_loras`` slots as batches need them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from typing import Any

from ray.llm._internal.serve.constants import (
    RAYLLM_VLLM_ENGINE_CLS_ENV as ENGINE_CLASS_ENV,
)
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.engines.vllm import vllm_models
from ray.llm._internal.serve.utils.batcher import Batcher
from ray.serve.llm import LLMServer

from engine.errors import ClientError, ModelNotFoundError
from engine.lora.adapter import AdapterRecord, is_adapter_id, parse_adapter_id
from engine.lora.store import adapter_registry
from engine.store.manager import default_root
from service.serve_overrides.grpc_binding import bind_replica_grpc_to_node


class FirstOutputBatcher(Batcher):
    """Ray's stream batcher, except that the first batch leaves as soon as there is output.

    The first batch holds everything the engine produced in its first step (for a chat stream,
    the role chunk and the first token). An interval of 0 or None keeps Ray's behaviour.
    """

    def __init__(self, generator: AsyncGenerator[Any, None], interval_ms: float | None) -> None:
        self._output = asyncio.Event()
        super().__init__(generator, interval_ms=interval_ms)

    async def read(self) -> None:
        try:
            async for item in self.generator:
                self.queue.put_nowait(item)
                self._output.set()
        finally:
            self.done_event.set()
            self._output.set()

    async def stream(self) -> AsyncGenerator[Any, None]:
        if self.interval_s:
            await self._output.wait()
            await asyncio.sleep(0)  # let the reader queue the rest of the same engine step
            first, done = self.check_done_and_drain()
            if first:
                yield self._merge_results(first)
            if done:
                self.read_task.result()  # raise the generator's error, if any
                return
        async for batch in super().stream():
            yield batch


HUB_TOKENS = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})


def keep_hub_tokens_out_of_runtime_envs() -> None:
    """Stop Ray Serve LLM from copying hub tokens into engine workers' (logged) runtime envs."""
    vllm_models.ENV_VARS_TO_PROPAGATE.difference_update(HUB_TOKENS)


class TurnoutLLMServer(LLMServer):
    """``LLMServer`` with vLLM 0.32's tokenization handler wired in, a prompt first batch, and
    no hub token in its engines' runtime env."""

    async def __init__(self, *args: Any, **kwargs: Any) -> None:
        keep_hub_tokens_out_of_runtime_envs()
        bind_replica_grpc_to_node()
        self._adapters: dict[str, asyncio.Task[None]] = {}  # adapter id -> its load
        await super().__init__(*args, **kwargs)

    def _get_default_engine_class(self) -> type:
        if os.environ.get(ENGINE_CLASS_ENV):  # Ray's own injection point (benchmarks use it)
            return super()._get_default_engine_class()
        from service.serve_overrides.engine_class import TurnoutVLLMEngine

        return TurnoutVLLMEngine

    async def _run_request(self, request: Any, **kwargs: Any) -> Any:
        model = getattr(request, "model", None)
        if isinstance(model, str) and is_adapter_id(model):
            await self._load_adapter(model)
        return await super()._run_request(request, **kwargs)

    async def _load_adapter(self, adapter_id: str) -> None:
        """Load ``adapter_id`` into the engine once; concurrent first requests share the load."""
        task = self._adapters.get(adapter_id)
        if task is None or (task.done() and task.exception() is not None):
            task = self._adapters[adapter_id] = asyncio.get_running_loop().create_task(self._load(adapter_id))
        await asyncio.shield(task)

    async def _load(self, adapter_id: str) -> None:
        base, _ = parse_adapter_id(adapter_id)
        served = self._llm_config.model_id
        if base != served:
            raise ModelNotFoundError(f"adapter {adapter_id!r} is not for {served}", param="model")
        if not self._llm_config.engine_kwargs.get("enable_lora"):
            raise ClientError(
                f"{served} serves no adapters: set its engine's max_loras (models[].engine.max_loras)", param="model",
            )
        record = _adapter_record(adapter_id)
        rank = self._llm_config.engine_kwargs.get("max_lora_rank", 16)
        if record.rank > rank:
            raise ClientError(
                f"adapter {adapter_id!r} has rank {record.rank}; {served} serves ranks up to {rank} "
                "(models[].engine.max_lora_rank)", param="model",
            )
        await self.engine.resolve_lora(DiskMultiplexConfig(
            model_id=adapter_id, local_path=str(record.path), max_total_tokens=None, lora_assigned_int_id=0,
        ))

    async def start(self) -> None:
        await super().start()
        engine = self.engine
        state = getattr(engine, "_app_state", None)
        if getattr(engine, "_oai_serving_tokenization", None) is None and state is not None:
            engine._oai_serving_tokenization = getattr(state, "serving_tokenization", None)

    def _batch_output_stream(self, generator: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        return FirstOutputBatcher(generator, self._get_batch_interval_ms()).stream()


def _adapter_record(adapter_id: str) -> AdapterRecord:
    """The adapter's record in the store this replica was started with (``$TURNOUT_HOME``)."""
    record = adapter_registry(default_root()).load().get(adapter_id)
    if record is None:
        raise ModelNotFoundError(f"the model {adapter_id!r} does not exist", param="model")
    return record
