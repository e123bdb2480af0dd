"""The OpenAI request types the API validates into: vLLM's own protocol models.

``ray.serve.llm`` re-exports the chat and completion types that its ``LLMServer`` expects; the
embedding and tokenize types come straight from vLLM (the same classes Ray uses internally).
Replicas answer errors with Ray's internal ``ErrorResponse``; the public class is a subclass of it,
so ``isinstance`` checks need the internal one.
"""

from ray.llm._internal.serve.core.configs.openai_api_models import ErrorResponse
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest
from vllm.entrypoints.pooling.embed.protocol import EmbeddingCompletionRequest
from vllm.entrypoints.serve.tokenize.protocol import (
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingCompletionRequest",
    "ErrorResponse",
    "TokenizeChatRequest",
    "TokenizeCompletionRequest",
]
