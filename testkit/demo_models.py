"""Session fixtures of the model store with the demo models, prepared once per session (tests and
benchmarks import them into their conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.protocol import ModelRecord
from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID, prepare_demo_models
from engine.store.manager import LocalModelManager
from testkit.servers import REPO


@pytest.fixture(scope="session")
async def demo_store() -> LocalModelManager:
    """The store at $TURNOUT_HOME (``make test`` sets it to ./.turnout) with the demo models."""
    manager = LocalModelManager(Path(os.environ.get("TURNOUT_HOME") or REPO / ".turnout"))
    await manager.initialize()
    await prepare_demo_models(manager)
    return manager


@pytest.fixture(scope="session")
def smollm2_record(demo_store: LocalModelManager) -> ModelRecord:
    return demo_store.get_model(SMOLLM2_ID)


@pytest.fixture(scope="session")
def deepseek_record(demo_store: LocalModelManager) -> ModelRecord:
    return demo_store.get_model(DEEPSEEK_ID)


@pytest.fixture(scope="session")
def minilm_record(demo_store: LocalModelManager) -> ModelRecord:
    return demo_store.get_model(MINILM_ID)
