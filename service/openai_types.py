"""The OpenAI request types the API validates into: vLLM's own protocol models.

``ray.serve.llm`` re-exports the chat and completion types that its ``LLMServer`` expects; the
embedding and tokenize types come straight from vLLM (the same classes Ray uses internally).
"""

from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest, ErrorResponse
from vllm.entrypoints.pooling.embed.protocol import EmbeddingCompletionRequest
from vllm.entrypoints.serve.tokenize.protocol import TokenizeChatRequest, TokenizeCompletionRequest

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingCompletionRequest",
    "ErrorResponse",
    "TokenizeChatRequest",
    "TokenizeCompletionRequest",
]
