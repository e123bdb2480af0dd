"""Session-wide fixtures: the model store with the demo models, prepared once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID, prepare_demo_models
from engine.protocol import ModelRecord
from engine.store import LocalModelManager
from tests.graph import cloud_standin, deployment, graph_store  # noqa: F401 - session resources of the e2e tiers

pytest_plugins = ["tests.lifetimes"]  # the run order, and resources stopped after their last test

REPO = Path(__file__).resolve().parent.parent
# Any Ray started in or below the test process stays on loopback (tests send traffic only there).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Under pytest-xdist (`make test`: two workers on two cores) each worker's own torch work (float32
# references, GPTQ, fine-tuning) takes one thread: two threads per worker made OpenMP's waiting
# threads spin against the other worker's, and GPTQ took 5x as long as alone. Engines keep their
# own binding (cpu_threads_bind, or vLLM's).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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
