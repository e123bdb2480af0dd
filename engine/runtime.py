"""Host one vLLM engine (V1 ``AsyncLLM``) in this process.

Used by the command line (``generate``) and by the integration tests; the serving graph hosts its
engines through Ray Serve LLM instead. vLLM is imported only when an engine starts. On the CPU,
vLLM starts its engine processes with ``spawn``, which re-imports the main module: a script that
starts an engine needs an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import typing
import uuid
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import ClientError, ConfigError, ServerError
from engine.launch.node import prepare_node
from engine.launch.plan import EngineLaunch

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM


@dataclass(frozen=True)
class Completion:
    """The final result of one generation request."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None  # "stop", "length" or "abort", as vLLM reports it

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


class LocalEngine:
    """One started vLLM engine; create it with :meth:`start`, stop it with :meth:`shutdown`.

    Every call is one engine request with a unique id; cancelling the calling task aborts the
    request inside the engine (vLLM's ``generate``/``encode`` abort on ``CancelledError``).
    Engine errors become :class:`ClientError` (bad request) or :class:`ServerError`.
    """

    def __init__(self, llm: AsyncLLM, launch: EngineLaunch) -> None:
        self._llm: AsyncLLM | None = llm
        self.launch = launch

    @classmethod
    async def start(cls, launch: EngineLaunch) -> LocalEngine:
        """Create the engine and load the model; returns once it can take requests.

        ``launch.env`` is in ``os.environ`` while the engine process starts (it reads its CPU
        binding from there) and restored afterwards. Loading blocks the event loop. Raises
        :class:`ConfigError` when vLLM rejects the arguments, :class:`ServerError` when the
        engine fails to start.
        """
        prepare_node(launch.node_work)  # the int8 copy, and the checks that need this machine
        try:
            return cls(_create_llm(launch), launch)
        except ValueError as e:  # vLLM's config validation (pydantic errors are ValueErrors)
            raise ConfigError(f"vLLM rejected the engine arguments: {e}", param="engine") from e
        except RuntimeError as e:
            raise ServerError(f"the engine failed to start: {e}") from e

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        json_schema: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> Completion:
        """Answer a conversation, rendered with the checkpoint's chat template.

        With ``json_schema`` the output is constrained to JSON matching the schema.
        """
        from vllm.renderers import ChatParams
        from vllm.sampling_params import StructuredOutputsParams

        params = ChatParams(chat_template_kwargs={"add_generation_prompt": True})
        with _engine_errors():
            _, (prompt,) = await self._engine.renderer.render_chat_async([messages], params)
        structured = StructuredOutputsParams(json=json_schema) if json_schema else None
        sampling = _sampling(
            max_tokens=max_tokens, temperature=temperature, seed=seed, structured_outputs=structured
        )
        return await self._generate(prompt, sampling)

    async def complete(
        self, prompt: str, *, max_tokens: int, temperature: float = 0.0, ignore_eos: bool = False
    ) -> Completion:
        """Continue a raw text prompt (no chat template)."""
        with _engine_errors():
            (engine_input,) = await self._engine.renderer.render_cmpl_async([{"prompt": prompt}])
        sampling = _sampling(max_tokens=max_tokens, temperature=temperature, ignore_eos=ignore_eos)
        return await self._generate(engine_input, sampling)

    async def complete_ids(
        self, prompt_ids: list[int], *, max_tokens: int, temperature: float = 0.0,
        ignore_eos: bool = False,
    ) -> Completion:
        """Continue a prompt given as token ids (no template, no tokenizer in between)."""
        from vllm.inputs import TokensPrompt

        sampling = _sampling(max_tokens=max_tokens, temperature=temperature, ignore_eos=ignore_eos)
        return await self._generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), sampling)

    async def score_ids(self, token_ids: list[int]) -> list[tuple[float, int]]:
        """For each token after the first: its log-probability given the ones before, and its
        rank among the model's choices there (1: the greedy choice)."""
        from vllm.inputs import TokensPrompt

        sampling = _sampling(max_tokens=1, prompt_logprobs=1)
        prompt = TokensPrompt(prompt_token_ids=list(token_ids))
        final = await _last(self._engine.generate(prompt, sampling, _request_id("score")))
        entries = final.prompt_logprobs[1:]
        return [(entry[tok].logprob, entry[tok].rank) for tok, entry in zip(token_ids[1:], entries)]

    async def memory(self) -> dict[str, int]:
        """The first worker's ``rss_bytes`` (:mod:`engine.patches.worker_memory`)."""
        from engine.patches.worker_memory import METHOD

        first, *_ = await self._engine.collective_rpc(METHOD)
        return first

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One embedding vector per text (needs an engine started with ``runner='pooling'``)."""
        return list(await asyncio.gather(*(self._embed_one(text) for text in texts)))

    @property
    def num_unfinished_requests(self) -> int:
        """Requests the engine has accepted and not yet finished or aborted."""
        return self._engine.get_num_unfinished_requests()

    async def shutdown(self) -> None:
        """Stop the engine process and free its memory; calling it again does nothing."""
        self.close()

    def close(self) -> None:
        """:meth:`shutdown` for callers outside the event loop (it does not wait on the loop)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()

    async def __aenter__(self) -> LocalEngine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def _engine(self) -> AsyncLLM:
        if self._llm is None:
            raise ServerError("the engine has been shut down")
        return self._llm

    async def _generate(self, prompt: Any, sampling: Any) -> Completion:
        final = await _last(self._engine.generate(prompt, sampling, _request_id("gen")))
        output = final.outputs[0]
        return Completion(output.text, tuple(output.token_ids), output.finish_reason)

    async def _embed_one(self, text: str) -> list[float]:
        from vllm.pooling_params import PoolingParams

        with _engine_errors():
            (prompt,) = await self._engine.renderer.render_cmpl_async([{"prompt": text}])
        request = self._engine.encode(prompt, PoolingParams(task="embed"), _request_id("embd"))
        final = await _last(request)
        if final.error is not None:
            raise ServerError(f"embedding failed: {final.error.message}")
        return final.outputs.data.tolist()


def _create_llm(launch: EngineLaunch) -> AsyncLLM:
    from vllm.v1.engine.async_llm import AsyncLLM

    # Never bind the engine to a local here: vLLM keeps an ImportError (torchcodec, in
    # vllm.multimodal.media.audio) whose traceback pins the frames that first imported vLLM,
    # which would keep the engine alive until interpreter exit, after shutdown.
    with _environ(launch.env):
        return AsyncLLM.from_engine_args(_engine_args(launch.engine_kwargs))


def _engine_args(kwargs: dict[str, Any]) -> Any:
    """AsyncEngineArgs from plain kwargs; nested configs given as dicts become config objects."""
    from pydantic import TypeAdapter
    from vllm.engine.arg_utils import AsyncEngineArgs

    field_types = {f.name: f.type for f in dataclasses.fields(AsyncEngineArgs)}
    converted = dict(kwargs)
    for key, value in kwargs.items():
        config_type = _config_type(field_types.get(key))
        if isinstance(value, dict) and config_type is not None:
            converted[key] = TypeAdapter(config_type).validate_python(value)
    return AsyncEngineArgs(**converted)


def _config_type(annotation: Any) -> type | None:
    """The vLLM config dataclass of a field annotated ``Config`` or ``Config | None``."""
    candidates = typing.get_args(annotation) or (annotation,)
    configs = (t for t in candidates if isinstance(t, type) and dataclasses.is_dataclass(t))
    return next(configs, None)


def _sampling(**kwargs: Any) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    with _engine_errors():
        return SamplingParams(output_kind=RequestOutputKind.FINAL_ONLY, **kwargs)


async def _last(outputs: AsyncGenerator[Any, None]) -> Any:
    """Drain an engine request; a cancelled caller aborts it inside the engine."""
    final = None
    with _engine_errors():
        async for final in outputs:
            pass
    if final is None:
        raise ServerError("the engine finished a request without output")
    return final


def _request_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@contextmanager
def _engine_errors() -> Iterator[None]:
    from vllm.exceptions import VLLMClientError, VLLMServerError

    try:
        yield
    except VLLMClientError as e:
        raise ClientError(str(e)) from e
    except VLLMServerError as e:
        raise ServerError(f"engine error: {e}") from e
    except ValueError as e:  # prompt rendering and parameter checks (e.g. no chat template)
        raise ClientError(str(e)) from e


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
