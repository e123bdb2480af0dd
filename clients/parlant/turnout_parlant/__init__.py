"""Parlant NLP services served by a Turnout backend (its OpenAI-compatible API)."""

from turnout_parlant.catalog import Catalog, ModelCard
from turnout_parlant.client import Timeouts, TurnoutClient
from turnout_parlant.embedding import TurnoutEmbedder
from turnout_parlant.errors import (
    TurnoutAPIError,
    TurnoutClientError,
    TurnoutConnectionError,
    TurnoutError,
    TurnoutRateLimitError,
    TurnoutSchemaError,
    TurnoutServerError,
)
from turnout_parlant.factory import NLPServiceFactory
from turnout_parlant.generation import (
    GenerationSettings,
    TurnoutSchematicGenerator,
    TurnoutStreamingTextGenerator,
)
from turnout_parlant.loader import turnout_nlp_service
from turnout_parlant.moderation import TurnoutModeration
from turnout_parlant.service import DeepSeekService, LlamaService, TurnoutNLPService
from turnout_parlant.switcher import ModelStats, ModelSwitcher
from turnout_parlant.tokenizer import TurnoutTokenizer

__all__ = [
    "Catalog", "DeepSeekService", "GenerationSettings", "LlamaService", "ModelCard", "ModelStats",
    "ModelSwitcher", "NLPServiceFactory", "Timeouts", "TurnoutAPIError", "TurnoutClient",
    "TurnoutClientError", "TurnoutConnectionError", "TurnoutEmbedder", "TurnoutError",
    "TurnoutModeration", "TurnoutNLPService", "TurnoutRateLimitError", "TurnoutSchemaError",
    "TurnoutSchematicGenerator", "TurnoutServerError", "TurnoutStreamingTextGenerator",
    "TurnoutTokenizer", "turnout_nlp_service",
]
