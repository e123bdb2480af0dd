"""A Turnout backend for the Parlant adapter's tests: the demo graph, started once per session
with the real ``turnout serve`` command (or an already running one named by TURNOUT_PARLANT_URL).
The dependency on the demo graph is declared, so the graph stops after the last of these tests."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from testkit.servers import free_port
from tests.graph import Deployment

if TYPE_CHECKING:
    from turnout_parlant import TurnoutNLPService

# The adapter is its own distribution (clients/parlant); without it installed these tests are
# not collected rather than failing the whole run at import.
if importlib.util.find_spec("turnout_parlant") is None:
    collect_ignore_glob = ["test_*.py"]

# Importing parlant.bin.server creates its home directory (default ./parlant-data) and logs into
# it; keep that out of the repository.
os.environ.setdefault("PARLANT_HOME", tempfile.mkdtemp(prefix="parlant-home-"))

SMOLLM2_ID = "local/llama/smollm2-135m-instruct"
DEEPSEEK_ID = "local/deepseek/deepseek-v3-tiny"
MINILM_ID = "local/embedding/all-minilm-l6-v2"


if os.environ.get("TURNOUT_PARLANT_URL"):
    @pytest.fixture(scope="session")
    def turnout_url() -> str:
        """A running backend named by TURNOUT_PARLANT_URL."""
        return os.environ["TURNOUT_PARLANT_URL"]
else:
    @pytest.fixture(scope="session")
    def turnout_url(deployment: Deployment) -> str:
        """The session's demo graph (tests/graph.py)."""
        return deployment.base_url


@pytest.fixture(scope="session")
async def service(turnout_url: str) -> AsyncIterator[TurnoutNLPService]:
    """Pinned to SmolLM2 (the real chat model), deterministic."""
    from turnout_parlant import GenerationSettings, TurnoutNLPService

    nlp = TurnoutNLPService(turnout_url, model=SMOLLM2_ID, settings=GenerationSettings(default_temperature=0.0))
    await nlp.initialize()
    yield nlp
    await nlp.aclose()


@pytest.fixture(scope="session")
def dead_url() -> str:
    """A loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"
