"""The per-model replica: ``ray.serve.llm``'s ``LLMServer`` hosting vLLM's AsyncLLM, plus one fix.

Ray 2.60 looks vLLM's tokenization handler up under its pre-0.32 name
(``openai_serving_tokenization``); vLLM 0.32 calls it ``serving_tokenization``, so ``/tokenize``
would answer "not supported" for every model. After the engine starts, the handler is wired in.
"""

from __future__ import annotations

from ray.serve.llm import LLMServer


class TurnoutLLMServer(LLMServer):
    """``LLMServer`` with vLLM 0.32's tokenization handler wired in."""

    async def start(self) -> None:
        await super().start()
        engine = self.engine
        state = getattr(engine, "_app_state", None)
        if getattr(engine, "_oai_serving_tokenization", None) is None and state is not None:
            engine._oai_serving_tokenization = getattr(state, "serving_tokenization", None)
