"""One engine per demo model for the integration tests that only read from it.

Each starts on first use and stops after the last test that uses it (``tests/lifetimes.py`` runs
each engine's users together, so one engine runs at a time). Tests and engines share the session
event loop: an engine's output handler runs on the loop of its first request, and requests from
any other loop fail. ``TURNOUT_TEST_CPU_KERNELS=vllm`` starts them on vLLM's own kernel choice
(see tests/integration/test_reference.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from engine.launch.cpu import CpuKernels
from engine.launch.plan import build_engine_args
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord
from engine.runtime import LocalEngine
from tests.lifetimes import stop_after_last_use

KERNELS = CpuKernels(os.environ.get("TURNOUT_TEST_CPU_KERNELS", CpuKernels.PORTABLE.value))


async def _engine(request: pytest.FixtureRequest, name: str, record: ModelRecord) -> AsyncIterator[LocalEngine]:
    engine = await LocalEngine.start(build_engine_args(record, EngineSettings(cpu_kernels=KERNELS)))
    stop_after_last_use(request, name, engine.close)
    try:
        yield engine
    finally:
        engine.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def smollm2_engine(request: pytest.FixtureRequest, smollm2_record: ModelRecord) -> AsyncIterator[LocalEngine]:
    async for engine in _engine(request, "smollm2_engine", smollm2_record):
        yield engine


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def deepseek_engine(request: pytest.FixtureRequest, deepseek_record: ModelRecord) -> AsyncIterator[LocalEngine]:
    async for engine in _engine(request, "deepseek_engine", deepseek_record):
        yield engine


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def minilm_engine(request: pytest.FixtureRequest, minilm_record: ModelRecord) -> AsyncIterator[LocalEngine]:
    async for engine in _engine(request, "minilm_engine", minilm_record):
        yield engine
