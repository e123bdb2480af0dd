"""ModelSwitcher and NLPServiceFactory against the real demo graph."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from parlant.core.common import DefaultBaseModel
from turnout_parlant import (
    LlamaService,
    ModelStats,
    ModelSwitcher,
    NLPServiceFactory,
    TurnoutError,
    TurnoutNLPService,
)

from tests.parlant.conftest import DEEPSEEK_ID, SMOLLM2_ID

pytestmark = pytest.mark.e2e


class Verdict(DefaultBaseModel):
    approved: bool


class Proxy:
    """A loopback TCP relay to the backend that can be cut, to make the backend unreachable."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.close()
            await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, upstream_writer]
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy(turnout_url: str) -> AsyncIterator[Proxy]:
    relay = Proxy(turnout_url)
    yield relay
    await relay.cut()


async def test_switcher_lists_sets_and_monitors(turnout_url: str) -> None:
    switcher = ModelSwitcher(TurnoutNLPService(turnout_url))
    await switcher.initialize()
    assert {SMOLLM2_ID, DEEPSEEK_ID} <= {card.id for card in await switcher.list_available_models()}
    generator = await switcher.get_schematic_generator(Verdict)
    auto = await generator.generate("Approve?", {"temperature": 0.0})
    # ``auto`` may have routed the first call to either model; the pinned call adds exactly one.
    assert switcher.stats[auto.info.model].calls == 1
    before = switcher.stats.get(DEEPSEEK_ID, ModelStats()).calls
    await switcher.set_model(DEEPSEEK_ID)
    result = await generator.generate("Approve?", {"temperature": 0.0})
    assert result.info.model == DEEPSEEK_ID
    assert switcher.stats[DEEPSEEK_ID].calls == before + 1 and switcher.stats[DEEPSEEK_ID].mean_latency_s > 0
    with pytest.raises(TurnoutError, match="no-such-model"):
        await switcher.set_model("local/llama/no-such-model")
    assert switcher.current_model == DEEPSEEK_ID
    await switcher.service.aclose()


async def test_switcher_falls_back_when_the_backend_is_unreachable(turnout_url: str, proxy: Proxy) -> None:
    fallback = LlamaService(turnout_url)
    switcher = ModelSwitcher(LlamaService(await proxy.start()), fallback=fallback)
    await switcher.initialize()
    generator = await switcher.get_schematic_generator(Verdict)
    await proxy.cut()
    result = await generator.generate("Approve?", {"temperature": 0.0})
    assert isinstance(result.content.approved, bool) and result.info.model == SMOLLM2_ID
    assert switcher.stats[SMOLLM2_ID].failures == 1
    assert any(model.startswith("fallback/") for model in switcher.stats)
    await fallback.aclose()


async def test_factory_creates_each_kind(turnout_url: str) -> None:
    factory = NLPServiceFactory(turnout_url)
    catalog = await factory.initialize()
    assert DEEPSEEK_ID in catalog.ids
    llama = await factory.create_service("llama")
    deepseek = await factory.create_service("deepseek")
    switcher = await factory.create_service("model_switcher")
    default = await factory.create_default_service()
    assert isinstance(llama, LlamaService) and llama.model == SMOLLM2_ID
    assert isinstance(deepseek, TurnoutNLPService) and deepseek.model == DEEPSEEK_ID
    assert isinstance(switcher, ModelSwitcher) and switcher.current_model == "auto"
    assert isinstance(default, LlamaService)
    with pytest.raises(TurnoutError, match="unknown service kind"):
        await factory.create_service("gpt")  # type: ignore[arg-type]
    for service in (llama, deepseek, switcher.service, default):
        await service.aclose()
